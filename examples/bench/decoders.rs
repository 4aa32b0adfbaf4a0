//! PLACEHOLDER (being ported from benches/decode.rs).

pub struct Row {
    pub name: String,
    pub ns_per_frame: f64,
}

pub async fn run(_quick: bool) -> Vec<Row> {
    Vec::new()
}

pub fn markdown(_rows: &[Row]) -> String {
    String::new()
}
