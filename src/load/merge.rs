//! `wsfault report merge`: one verdict over many load workers' reports
//! (docs/reference.md#merged-reports) — a load too big for one process or
//! pod runs as N workers, each writing `--report`, and the merge adds them.
//!
//! Percentiles come from the workers' HDR histograms added together (the
//! `histograms` field of each report), never from averaged percentiles, so
//! they are those of one histogram holding every sample. Counters are
//! summed; throughput is the sum of the workers' (they run side by side);
//! the SLOs are evaluated over the whole.

use std::collections::BTreeMap;

use super::live::new_histogram;
use super::report::{self, decode_histogram, Report, ScriptSummary};
use super::slo::Slo;

/// A report that cannot be merged: which one and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct MergeError {
    /// The report file (or its position).
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// Merges `reports` (file name, report) and judges the whole with `slos`
/// (the default SLOs when empty).
pub fn merge(reports: &[(String, Report)], slos: &[Slo]) -> Result<Report, MergeError> {
    if reports.is_empty() {
        return Err(MergeError {
            file: "(none)".into(),
            message: "no reports to merge: give at least one FILE".into(),
        });
    }
    let mut latency = new_histogram();
    let mut reconnect = new_histogram();
    let mut merged = Report::default();
    let mut samples: BTreeMap<String, u64> = BTreeMap::new();
    let mut modes: Vec<&str> = Vec::new();
    let mut urls: Vec<&str> = Vec::new();
    let mut scripts: Vec<&ScriptSummary> = Vec::new();
    for (file, r) in reports {
        let bad = |message: String| MergeError {
            file: file.clone(),
            message,
        };
        let h = r.histograms.as_ref().ok_or_else(|| {
            bad("has no `histograms` (written by a wsfault older than 0.2?): percentiles cannot be merged exactly".into())
        })?;
        let l =
            decode_histogram(&h.latency).map_err(|e| bad(format!("histograms.latency: {e}")))?;
        let c = decode_histogram(&h.reconnect)
            .map_err(|e| bad(format!("histograms.reconnect: {e}")))?;
        latency
            .add(&l)
            .map_err(|e| bad(format!("histograms.latency: {e:?}")))?;
        reconnect
            .add(&c)
            .map_err(|e| bad(format!("histograms.reconnect: {e:?}")))?;
        let m = &mut merged;
        m.duration_s = m.duration_s.max(r.duration_s);
        let (mc, rc) = (&mut m.connections, &r.connections);
        mc.attempted += rc.attempted;
        mc.succeeded += rc.succeeded;
        mc.failed += rc.failed;
        mc.reconnects += rc.reconnects;
        mc.disconnects += rc.disconnects;
        mc.peak_active += rc.peak_active;
        m.messages.add(&r.messages);
        m.throughput_mps += r.throughput_mps;
        m.errors.count += r.errors.count;
        for s in &r.errors.samples {
            *samples.entry(s.message.clone()).or_insert(0) += s.count;
        }
        if !modes.contains(&r.mode.as_str()) {
            modes.push(&r.mode);
        }
        if !urls.contains(&r.url.as_str()) {
            urls.push(&r.url);
        }
        if let Some(s) = &r.script {
            scripts.push(s);
        }
    }
    merged.mode = if modes.len() == 1 {
        modes[0].to_string()
    } else {
        format!("mixed ({})", modes.join(", "))
    };
    merged.url = urls.join(", ");
    merged.throughput_mps = report::round3(merged.throughput_mps);
    merged.errors.samples = samples
        .into_iter()
        .map(|(message, count)| report::ErrorSample { message, count })
        .collect();
    report::sort_samples(&mut merged.errors.samples);
    merged.errors.percent = merged.error_percent();
    if scripts.len() == reports.len() {
        let first = scripts[0];
        if scripts
            .iter()
            .all(|s| s.file == first.file && s.protocol == first.protocol)
        {
            merged.script = Some(ScriptSummary {
                heartbeats_answered: scripts.iter().map(|s| s.heartbeats_answered).sum(),
                ..first.clone()
            });
        }
    }
    merged.set_histograms(&latency, &reconnect);
    let slos = if slos.is_empty() {
        super::default_slos()
    } else {
        slos.to_vec()
    };
    super::slo::judge(&mut merged, &slos, None, 0.0);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;
    use rand::{RngExt as _, SeedableRng as _};

    /// A report over `latencies` (µs), with `received` messages.
    fn report_of(latencies: &[u64], reconnects: &[u64], received: u64) -> Report {
        let mut l = new_histogram();
        let mut c = new_histogram();
        for &us in latencies {
            l.record(us).unwrap();
        }
        for &us in reconnects {
            c.record(us).unwrap();
        }
        let mut r = Report {
            mode: "echo".into(),
            url: "ws://proxy:8080/".into(),
            duration_s: 10.0,
            throughput_mps: received as f64 / 10.0,
            ..Report::default()
        };
        r.connections.attempted = 5;
        r.connections.succeeded = 5;
        r.messages.sent = received;
        r.messages.received = received;
        r.set_histograms(&l, &c);
        r
    }

    fn samples(seed: u64, n: usize) -> Vec<u64> {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                // A long tail: mostly 1-5 ms, some up to 2 s.
                if rng.random_bool(0.02) {
                    rng.random_range(50_000..2_000_000)
                } else {
                    rng.random_range(1_000..5_000)
                }
            })
            .collect()
    }

    #[test]
    fn split_samples_merge_to_the_percentiles_of_all_of_them() {
        let all = samples(7, 20_000);
        let recon = samples(8, 300);
        let whole = report_of(&all, &recon, 20_000);
        let (a, b) = all.split_at(6_000);
        let (ra, rb) = recon.split_at(100);
        let parts = vec![
            ("a.json".to_string(), report_of(a, ra, 6_000)),
            ("b.json".to_string(), report_of(b, rb, 14_000)),
        ];
        let merged = merge(&parts, &[]).unwrap();
        assert_eq!(merged.latency_ms, whole.latency_ms);
        assert_eq!(merged.reconnect_ms, whole.reconnect_ms);
        // The halves alone do not have those percentiles.
        assert_ne!(parts[0].1.latency_ms.p999, whole.latency_ms.p999);
        assert_eq!(merged.messages.received, 20_000);
        assert_eq!(merged.connections.attempted, 10);
        assert_eq!(merged.throughput_mps, 2_000.0);
        assert!(merged.pass, "{:?}", merged.failures);
        // The merged histogram is in the merged report, so merges nest.
        let again = merge(&[("m.json".into(), merged.clone())], &[]).unwrap();
        assert_eq!(again.latency_ms, whole.latency_ms);
    }

    #[test]
    fn slos_are_judged_over_the_whole() {
        let mut a = report_of(&[1_000; 100], &[], 100);
        let b = report_of(&[1_000; 100], &[], 100);
        a.messages.lost = 3;
        a.errors.count = 2;
        a.errors.samples = vec![report::ErrorSample {
            message: "x".into(),
            count: 2,
        }];
        let parts = vec![("a".to_string(), a), ("b".to_string(), b)];
        let merged = merge(&parts, &[Slo::parse("loss<2%").unwrap()]).unwrap();
        // 3 lost of 200 sent: 1.5 % over the whole (a alone: 3 %).
        assert!(merged.pass, "{:?}", merged.failures);
        let merged = merge(&parts, &[]).unwrap();
        assert!(!merged.pass);
        assert_eq!(merged.failures, ["SLO loss==0 failed (measured 3)"]);
        assert_eq!(merged.errors.count, 2);
        assert_eq!(merged.errors.samples[0].count, 2);
    }

    #[test]
    fn a_report_without_histograms_is_named() {
        let mut old = report_of(&[1], &[], 1);
        old.histograms = None;
        let err = merge(&[("old.json".into(), old)], &[]).unwrap_err();
        assert_eq!(err.file, "old.json");
        assert!(err.message.contains("no `histograms`"), "{err}");
        let mut broken = report_of(&[1], &[], 1);
        if let Some(h) = broken.histograms.as_mut() {
            h.latency = "!!!".into();
        }
        let err = merge(&[("broken.json".into(), broken)], &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("broken.json: histograms.latency: not base64"),
            "{err}"
        );
        let _: Histogram<u64> = new_histogram();
    }
}
