#!/usr/bin/env python3
"""Write the checked-in seed corpora under fuzz/seeds/<target>/.

Tiny, hand-picked inputs: the wire snapshots of src/wire/packet/tests.rs,
minimal IPv4/IPv6 headers, a few configs, route tables, and node_udp mode
bytes. Re-run after changing a layout; the files are committed, so this is
optional. The handshake target's seeds carry real messages with valid MACs,
so Rust writes them: KITH_WRITE_SEEDS=1 cargo test --release --test fuzz_seeds.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# wire_packet: the snapshots of src/wire/packet/tests.rs.
initiation = b"\x81\0\0\0" + struct.pack(">I", 0xDEADBEEF) + bytes(range(108)) + bytes(32)
response = b"\x82\0\0\0" + struct.pack(">II", 1, 2) + b"\xaa" * 48 + b"\x11" * 16 + b"\x22" * 16
cookie = b"\x83\0\0\0" + struct.pack(">I", 7) + b"\x01" * 24 + b"\x02" * 32
data = b"\x84\0\0\0" + struct.pack(">IQ", 0x01020304, 0x1122334455667788) + b"\x33" * 16
stun = b"\x00\x01\x00\x58\x21\x12\xa4\x42" + bytes(12 + 0x58)  # RFC 5769 §2.1 header
assert (len(initiation), len(response), len(cookie), len(data)) == (148, 92, 64, 32)
for name, msg in [
    ("initiation", initiation),
    ("response", response),
    ("cookie_reply", cookie),
    ("data", data),
    ("data_long", data + b"\x44" * 64),
    ("stun", stun),
    ("reserved_set", b"\x84\0\x01\0" + bytes(28)),
]:
    write("wire_packet", name, msg)

# wire_ip: src/wire/ip.rs's test packet, an IPv6 packet, and liars.
v4 = bytearray(32)
v4[0] = 0x45
v4[2:4] = struct.pack(">H", 28)
v4[12:16] = bytes([100, 96, 0, 1])
v4[16:20] = bytes([100, 96, 0, 2])
v6 = bytearray(48)
v6[0] = 0x60
v6[4:6] = struct.pack(">H", 8)
v6[8:24] = bytes.fromhex("fd006b69000000000000000000000001")
v6[24:40] = bytes.fromhex("fd006b69000000000000000000000002")
v4_liar = bytearray(v4[:20])
v4_liar[2:4] = struct.pack(">H", 100)
for name, pkt in [("v4_padded", v4), ("v6", v6), ("v4_truncated", v4_liar), ("v4_short", b"\x45" * 10)]:
    write("wire_ip", name, bytes(pkt))

# config: keys for seeds [1; 32] and [2; 32] (as SecretKey::from_seed).
SK1 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
PK2 = "gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q="
valid = f"""# a node and one peer
[interface]
name = "kith0"
address = "100.96.0.1/16"
private_key = "{SK1}"
listen_port = 51871
mtu = 1420

[network]
id = "home"

[discovery]
dht = true
bootstrap = ["198.51.100.1:6881", "dht.example.net:25401"]
dht_port = 6881
state_dir = "/var/lib/kith"
dht_server = false

[[peer]]
name = "nas"
public_key = "{PK2}"
allowed_ips = ["100.96.0.2/32", "fd00:6b69::2/128"]
endpoint = "198.51.100.7:51871"
keepalive = "25s"
"""
write("config", "valid", valid)
write("config", "typo", valid.replace("address", "adress").replace("endpoint", "endpont"))
write("config", "syntax", "[interface]\naddress = = \"x\"\n")
write("config", "key_file", "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key_file = \"missing.key\"\n"
      "[network]\nid = \"home\"\nsecret_file = \"missing.secret\"\n")
write("config", "discovery", valid.replace('id = "home"', 'id = "my home"').replace(":25401\"]", ":0\", \"x\"]")
      .replace("dht_port = 6881", "dht_port = 51871").replace("dht_server", "dht_sever"))
write("config", "no_network", valid.replace('[network]\nid = "home"\n', ""))
write("config", "bad_values", valid.replace("1420", "100").replace("25s", "25 parsecs").replace("/32", "/33"))
write("config", "empty", "")

# node_udp: mode byte, then a raw datagram or a mask over A's genuine message.
write("node_udp", "genuine", b"\x03")  # exactly A's message: must reach the TUN
write("node_udp", "genuine_roamed", b"\x01")  # same, from a new address
write("node_udp", "bit_flip", b"\x03" + bytes(20) + b"\x01")  # one ciphertext bit
write("node_udp", "counter_bump", b"\x03" + bytes(15) + b"\x01")  # last counter byte
write("node_udp", "cut_tag", b"\x07")  # genuine minus its last byte
write("node_udp", "initiation", b"\x02" + initiation)
write("node_udp", "response", b"\x02" + response)
write("node_udp", "data", b"\x02" + data)
write("node_udp", "stun", b"\x00" + stun)


# relay: the snapshots of src/wire/relay.rs, and a Deliver with padding.
forward = b"\x10" + b"\xab" * 32 + struct.pack(">H", 3) + b"\x84\x01\x02"
deliver = b"\x11" + b"\x01" * 32 + struct.pack(">H", 1) + b"\x81"
for name, msg in [
    ("forward", forward),
    ("deliver_padded", deliver + bytes(12)),
    ("empty", b"\x10" + bytes(34)),
]:
    write("relay", name, msg)

# relay introductions: the snapshot of src/wire/relay.rs (a signature and a
# version 2 record with one reflexive candidate), passed on, and one whose
# record is cut short.
intro_record = bytes.fromhex("02000000006553f1000142c6120102ca9f00")
intro = b"\x5a" * 64 + intro_record
for name, ty, payload in [
    ("introduce", 0x12, intro),
    ("introduced", 0x13, intro),
    ("introduce_cut_record", 0x12, intro[:-3]),
]:
    write("relay", name, bytes([ty]) + b"\xcd" * 32 + struct.pack(">H", len(payload)) + payload)


# stream: the snapshot of src/wire/stream.rs (read size byte first), a
# frame cut across reads, and a zero length.
two = struct.pack(">H", 3) + b"\x84\x01\x02" + struct.pack(">H", 1) + b"\x81"
for name, msg in [
    ("two_frames", b"\x40" + two),
    ("one_byte_reads", b"\x01" + two),
    ("zero_length", b"\x02" + b"\x00\x00\x84"),
]:
    write("stream", name, msg)


# route: /proc/net/route as the kernel prints it (little-endian host): a
# default route via 192.168.1.1 among others, two defaults with different
# metrics, none, and lines cut short or with a signed field.
HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
def route(iface, dest, gw, flags, metric, mask):
    return f"{iface}\t{dest}\t{gw}\t{flags}\t0\t0\t{metric}\t{mask}\t0\t0\t0\n"
for name, text in [
    ("default", HEADER + route("eth0", "00000000", "0101A8C0", "0003", 100, "00000000")
        + route("eth0", "0001A8C0", "00000000", "0001", 100, "00FFFFFF")),
    ("two_defaults", HEADER + route("wlan0", "00000000", "0102A8C0", "0003", 600, "00000000")
        + route("eth0", "00000000", "0101A8C0", "0003", 100, "00000000")),
    ("no_default", HEADER + route("eth0", "0001A8C0", "00000000", "0001", 0, "00FFFFFF")),
    ("cut_and_signed", HEADER + "eth0\t00000000\t0101A8C0\n"
        + route("eth0", "00000000", "+101A8C0", "0003", 0, "00000000")),
]:
    write("route", name, text)

# gro: batches of segments (see fuzz/checks/gro.rs for the record layout).
def seg(kind, length, skew=0):
    return bytes([kind]) + struct.pack(">H", length) + bytes([skew])


for name, batch in [
    ("tcp4_run", b"\x00" + seg(0x00, 1000) * 3 + seg(0x00, 400)),
    ("tcp6_two_flows", b"\x00" + (seg(0x01, 1200) + seg(0x05, 1200)) * 3),
    ("udp_uso", b"\x01" + seg(0x02, 1200) * 3 + seg(0x03, 1200) * 2),
    ("psh_gap_damage", b"\x00" + seg(0x00, 900) + seg(0x10, 900) + seg(0x00, 900, 7)
        + seg(0x40, 900, 33) + seg(0x00, 900)),
    ("raw_and_fin", b"\x00" + b"\x80\x03\x45\x00\x00" + seg(0x20, 100) + b"\x80\x00"),
]:
    write("gro", name, batch)
