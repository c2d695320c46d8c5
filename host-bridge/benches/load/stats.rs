//! Small statistics for the tables: percentiles, medians, and how a
//! duration in microseconds is shown.

pub(crate) fn percentiles(latencies: &[u32]) -> (u32, u32) {
    if latencies.is_empty() {
        return (0, 0);
    }
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

pub(crate) fn micros(us: u32) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The median of `values`, and their min–max if there are several:
/// "1200 (1100–1300)".
pub(crate) fn spread(values: Vec<f64>, show: impl Fn(f64) -> String) -> String {
    if values.is_empty() {
        return String::new();
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let several = values.len() > 1;
    let middle = show(median(values));
    if several {
        format!("{middle} ({}–{})", show(min), show(max))
    } else {
        middle
    }
}

/// Rates, as [`spread`] shows them: whole numbers.
pub(crate) fn rates(values: Vec<f64>) -> String {
    spread(values, |r| format!("{r:.0}"))
}

/// What follows a system's name in a table when its runs had errors:
/// " (3 errors)", or nothing.
pub(crate) fn errors_note(errors: u64) -> String {
    if errors > 0 {
        format!(" ({errors} errors)")
    } else {
        String::new()
    }
}
