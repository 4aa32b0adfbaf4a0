//! PLACEHOLDER (being written).

pub struct Report {
    pub idle_cpu_percent: f64,
    pub idle_seconds: f64,
    pub ready_ms_max: f64,
    pub starts: usize,
}

pub async fn run(_quick: bool) -> Report {
    Report {
        idle_cpu_percent: 0.0,
        idle_seconds: 0.0,
        ready_ms_max: 0.0,
        starts: 0,
    }
}

pub fn markdown(_report: &Report) -> String {
    String::new()
}
