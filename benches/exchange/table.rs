//! The printed table: number and size formatting, the rows, the table
//! itself, and the date and load average of its header.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn us(ns: u64) -> String {
    format!("{:.1} us", ns as f64 / 1000.0)
}

pub(crate) fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub(crate) fn met(ok: bool) -> String {
    if ok { "met" } else { "NOT MET" }.to_owned()
}

/// One line of the table.
pub(crate) struct Row {
    id: &'static str,
    what: &'static str,
    result: String,
    target: String,
    status: String,
}

pub(crate) fn row(
    id: &'static str,
    what: &'static str,
    result: String,
    target: &str,
    status: String,
) -> Row {
    Row {
        id,
        what,
        result,
        target: target.to_owned(),
        status,
    }
}

pub(crate) fn failed(id: &'static str, what: &'static str, err: &str, target: &str) -> Row {
    row(
        id,
        what,
        format!("failed: {err}"),
        target,
        "NOT MET".to_owned(),
    )
}

pub(crate) fn print_table(rows: &[Row]) {
    let heads = ["id", "workload", "result", "target", "status"];
    let cells: Vec<[&str; 5]> = rows
        .iter()
        .map(|r| [r.id, r.what, &r.result, &r.target, &r.status])
        .collect();
    let mut width = heads.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c.iter()) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: [&str; 5]| {
        let parts: Vec<String> = c
            .iter()
            .zip(width.iter())
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(heads);
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for c in cells {
        line(c);
    }
}

/// Today's date and time (UTC) as `YYYY-MM-DD HH:MM UTC`, from the system clock.
pub(crate) fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The 1-minute load average (other work on the machine skews every figure).
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
