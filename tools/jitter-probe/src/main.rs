//! Prints how long aws-lc takes to hand out its first and second 32 random bytes in this
//! process, in µs: the first call seeds its DRBG tree (from CPU jitter entropy unless the build
//! set `AWS_LC_SYS_NO_JITTER_ENTROPY=1`). A TLS handshake's client random is such a first call.

use std::time::Instant;

fn main() {
    let mut bytes = [0u8; 32];
    let t = Instant::now();
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    let first = t.elapsed();
    let t = Instant::now();
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    let second = t.elapsed();
    println!("{{\"first_us\": {:.1}, \"second_us\": {:.2}}}", first.as_secs_f64() * 1e6, second.as_secs_f64() * 1e6);
}
