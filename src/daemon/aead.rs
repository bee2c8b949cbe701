//! Chooses kith's ChaCha20-Poly1305 backend ([`crate::core::aead`]) at
//! start: each one seals and opens packet-sized buffers for a few
//! milliseconds and the fastest wins, unless `KITH_AEAD` names one.
//!
//! Owns: the clock-driven measurement, which `core` may not do. It runs
//! once, before any handshake, and sets the process-wide default that
//! every later `noise::Resolver` picks up; the bench (`kith-lab bench`)
//! prints the same measurement over a longer window.
//!
//! Why measure rather than read CPU flags: the libraries detect the CPU
//! themselves, and which one wins depends on more than flags. OpenSSL's
//! AVX-512 ChaCha20 streams at ~2 GB/s on a Xeon where ring's AVX2 code
//! does ~1.4, yet per 1420-byte packet OpenSSL 3's EVP layer (IV and tag
//! through `OSSL_PARAM`s, a Poly1305 setup per message) costs ~0.65 µs
//! more, so ring wins there; what `openssl speed` reports is the stream.
//! The backends compute the same function, so peers may choose
//! differently.

use std::time::{Duration, Instant};

use tracing::info;

use crate::core::aead::{self, Backend, DataKey};

/// The environment variable that names a backend and skips the
/// measurement (tests, or an operator who measured otherwise).
pub const ENV: &str = "KITH_AEAD";
/// Bytes of plaintext per measured packet: a full packet at kith's default
/// MTU.
pub const PACKET: usize = 1420;
/// How long the daemon measures, all backends together.
pub const START_BUDGET: Duration = Duration::from_millis(30);
/// Rounds per backend, interleaved, so a burst of load from elsewhere on
/// the machine does not land on one backend only; each backend's best
/// round counts.
const ROUNDS: u32 = 3;

/// One backend's measured speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speed {
    pub backend: Backend,
    /// Plaintext bytes sealed plus bytes opened per second of CPU time.
    pub bytes_per_second: f64,
}

/// Seals and opens [`PACKET`]-byte buffers with every backend for about
/// `budget` in all, through the same in-place calls the sessions make
/// ([`DataKey`]); the speeds, in [`Backend::ALL`] order.
pub fn measure(budget: Duration) -> Vec<Speed> {
    let slice = budget / (ROUNDS * Backend::ALL.len() as u32);
    let mut key = [0u8; aead::KEY_LEN];
    // Any key measures the same; a random one keeps this honest about not
    // depending on it.
    let _ = getrandom::fill(&mut key);
    let ciphers: Vec<(Backend, DataKey)> = Backend::ALL
        .iter()
        .map(|&b| (b, DataKey::new(b, &key)))
        .collect();
    let mut best = vec![0.0f64; ciphers.len()];
    let mut packet = vec![0x5au8; PACKET];
    let mut opened = vec![0u8; PACKET];
    for _ in 0..ROUNDS {
        for ((_, cipher), best) in ciphers.iter().zip(&mut best) {
            let rate = round(cipher, slice, &mut packet, &mut opened);
            *best = best.max(rate);
        }
    }
    ciphers
        .iter()
        .zip(best)
        .map(|((backend, _), bytes_per_second)| Speed {
            backend: *backend,
            bytes_per_second,
        })
        .collect()
}

/// Seal-then-open pairs as a session makes them (sealed in place in
/// `packet`, opened into `opened`) for `slice` of wall-clock time; bytes per second
/// of this thread's CPU time, so that other processes taking the core
/// (a busy machine, the daemon's own start) do not count against the
/// backend measured at that moment. An open that fails counts nothing (a
/// broken backend never wins).
fn round(key: &DataKey, slice: Duration, packet: &mut [u8], opened: &mut [u8]) -> f64 {
    let mut counter = 0u64;
    let mut bytes = 0usize;
    let (start, cpu_start) = (Instant::now(), thread_cpu_time());
    // The clock is read once per 8 packets (~15 µs): often enough for a
    // slice of milliseconds, rare enough not to weigh on the result.
    while start.elapsed() < slice {
        for _ in 0..8 {
            let ok = key
                .seal(counter, packet)
                .and_then(|tag| key.open_into(counter, packet, &tag, opened));
            if ok.is_ok() {
                bytes += 2 * packet.len();
            }
            counter += 1;
        }
    }
    let cpu = thread_cpu_time().saturating_sub(cpu_start);
    let spent = if cpu.is_zero() { start.elapsed() } else { cpu };
    bytes as f64 / spent.as_secs_f64()
}

/// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the pointer, which
    // points at `ts`; this clock exists on every Linux kernel kith runs on.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// `"openssl 1.83 GB/s, ring 1.24, aws-lc-rs 1.61"`.
pub fn describe(speeds: &[Speed]) -> String {
    speeds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let unit = if i == 0 { " GB/s" } else { "" };
            format!("{} {:.2}{unit}", s.backend, s.bytes_per_second / 1e9)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The fastest of `speeds` (ring if there are none).
pub fn fastest(speeds: &[Speed]) -> Backend {
    speeds
        .iter()
        .max_by(|a, b| a.bytes_per_second.total_cmp(&b.bytes_per_second))
        .map_or(Backend::Ring, |s| s.backend)
}

/// `KITH_AEAD` set to something that is no backend's name.
#[derive(Debug, thiserror::Error)]
#[error(
    "{ENV}={value:?} names no AEAD backend: set it to ring, aws-lc-rs or openssl, or unset it and kith picks the fastest"
)]
pub struct BadOverride {
    pub value: String,
}

/// Picks the backend for this process, once at start: the one `KITH_AEAD`
/// names, else the fastest measured; logs the choice and makes it the
/// default for every handshake from now on.
pub fn choose() -> Result<Backend, BadOverride> {
    let chosen = match std::env::var(ENV) {
        Ok(value) if !value.trim().is_empty() => {
            let backend: Backend = value.parse().map_err(|_| BadOverride { value })?;
            info!("AEAD: {backend} (set by {ENV})");
            backend
        }
        _ => {
            let speeds = measure(START_BUDGET);
            let backend = fastest(&speeds);
            info!("AEAD: {}: using {backend}", describe(&speeds));
            backend
        }
    };
    aead::set_default(chosen);
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_is_measured_and_the_fastest_wins() {
        let speeds = measure(Duration::from_millis(6));
        assert_eq!(
            speeds.iter().map(|s| s.backend).collect::<Vec<_>>(),
            Backend::ALL
        );
        // Each sealed and opened something: a backend whose opens failed
        // would measure zero.
        assert!(
            speeds.iter().all(|s| s.bytes_per_second > 0.0),
            "{speeds:?}"
        );
        let pick = |rates: &[(Backend, f64)]| {
            fastest(
                &rates
                    .iter()
                    .map(|&(backend, bytes_per_second)| Speed {
                        backend,
                        bytes_per_second,
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let (ring, openssl) = (Backend::Ring, Backend::OpenSsl);
        assert_eq!(pick(&[(ring, 1.0), (openssl, 2.0)]), openssl);
        assert_eq!(pick(&[(openssl, 2.0), (ring, 3.0)]), ring);
        #[cfg(feature = "aws-lc")]
        assert_eq!(
            pick(&[(ring, 1.0), (Backend::AwsLc, 3.0), (openssl, 2.0)]),
            Backend::AwsLc
        );
        assert_eq!(fastest(&[]), Backend::Ring);
    }

    #[test]
    fn the_log_line_names_each_backend_with_its_speed() {
        let speeds = [
            Speed {
                backend: Backend::OpenSsl,
                bytes_per_second: 1.834e9,
            },
            Speed {
                backend: Backend::Ring,
                bytes_per_second: 1.24e9,
            },
        ];
        assert_eq!(describe(&speeds), "openssl 1.83 GB/s, ring 1.24");
    }
}
