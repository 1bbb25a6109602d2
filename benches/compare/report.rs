//! The results: rows of statistics per section, written as JSON and as a
//! Markdown table with the machine, versions, ciphers and date.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::probe::Stats;

/// One measured quantity for one peer.
pub struct Row {
    /// Section, e.g. "handshake".
    pub section: &'static str,
    /// What was measured, e.g. "ssh host version / ssh host true".
    pub what: String,
    /// "keepsh", "sshd" or "tmux in sshd".
    pub peer: &'static str,
    /// Unit of the statistics, e.g. "ms", "MB/s", "KiB".
    pub unit: &'static str,
    /// The samples' summary.
    pub stats: Stats,
}

/// Everything the benchmark found.
#[derive(Default)]
pub struct Report {
    /// Machine, versions, ciphers, date: (key, value).
    pub context: Vec<(String, String)>,
    /// Measurements in the order they were taken.
    pub rows: Vec<Row>,
    /// The targets keepsh is held to: (target, measured, met).
    pub targets: Vec<(String, String, bool)>,
}

impl Report {
    /// Records a row.
    pub fn add(
        &mut self,
        section: &'static str,
        what: impl Into<String>,
        peer: &'static str,
        unit: &'static str,
        stats: Stats,
    ) {
        let row = Row {
            section,
            what: what.into(),
            peer,
            unit,
            stats,
        };
        eprintln!(
            "{section}: {} [{peer}] median {:.2} {unit} (min {:.2}, max {:.2}, p99 {:.2}, n {})",
            row.what, stats.median, stats.min, stats.max, stats.p99, stats.n
        );
        self.rows.push(row);
    }

    /// The first row of `section` and `peer` whose `what` starts with
    /// `what`, if any.
    pub fn find(&self, section: &str, what: &str, peer: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.section == section && r.what.starts_with(what) && r.peer == peer)
    }

    /// The report as JSON.
    pub fn json(&self) -> Value {
        let context: serde_json::Map<String, Value> = self
            .context
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "section": r.section, "what": r.what, "peer": r.peer, "unit": r.unit,
                    "median": r.stats.median, "min": r.stats.min, "max": r.stats.max,
                    "p99": r.stats.p99, "samples": r.stats.n,
                })
            })
            .collect();
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(|(t, m, ok)| json!({"target": t, "measured": m, "met": ok}))
            .collect();
        json!({"context": context, "results": rows, "targets": targets})
    }

    /// The report as Markdown: context, targets, then every row.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        for (k, v) in &self.context {
            let _ = writeln!(md, "- **{k}**: {v}");
        }
        if !self.targets.is_empty() {
            md.push_str("\n| target | measured | met |\n| --- | --- | --- |\n");
            for (target, measured, ok) in &self.targets {
                let mark = if *ok { "yes" } else { "**no**" };
                let _ = writeln!(md, "| {target} | {measured} | {mark} |");
            }
        }
        md.push_str(
            "\n| section | what | peer | median | min – max | p99 | n |\n\
             | --- | --- | --- | ---: | ---: | ---: | ---: |\n",
        );
        for r in &self.rows {
            let s = r.stats;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} {} | {} – {} | {} | {} |",
                r.section,
                r.what,
                r.peer,
                num(s.median),
                r.unit,
                num(s.min),
                num(s.max),
                num(s.p99),
                s.n
            );
        }
        md
    }

    /// Writes `results.json` and `results.md` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(&self.json()).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("results.json"), json + "\n")?;
        std::fs::write(dir.join("results.md"), self.markdown())
    }
}

/// A number with precision suited to its size.
pub fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}
