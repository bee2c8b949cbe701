//! The DHT record: sealing, opening and verifying (in progress).
