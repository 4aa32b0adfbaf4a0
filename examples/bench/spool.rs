//! PLACEHOLDER (being ported from benches/spool.rs).

pub struct Report {
    /// Messages/s delivered from a spooled backlog to a local mosquitto.
    pub drain_per_second: f64,
    /// Bytes written to the spool per byte of topic + payload, `sync = "1s"`.
    pub bytes_per_payload_byte: f64,
}

pub async fn run(_quick: bool) -> Report {
    Report {
        drain_per_second: 0.0,
        bytes_per_payload_byte: 0.0,
    }
}

pub fn markdown(_report: &Report) -> String {
    String::new()
}
