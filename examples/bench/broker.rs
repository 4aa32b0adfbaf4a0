//! PLACEHOLDER (being ported from benches/broker.rs).

pub struct Report {}

pub async fn run(_quick: bool) -> Report {
    Report {}
}

pub fn markdown(_report: &Report) -> String {
    String::new()
}
