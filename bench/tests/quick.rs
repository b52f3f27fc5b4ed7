//! The quick benchmark end to end, through the library: correctness only. Every expected
//! delivery arrives exactly once and the output files are written; the timings it measures
//! are not checked (the machine is shared).

use std::path::PathBuf;
use std::time::Duration;

use broker_bench::{Config, Mode, Outcome};

#[test]
fn quick_run_accounts_for_every_delivery_and_writes_its_files() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("broker-bench-quick");
    let _ = std::fs::remove_dir_all(&out);
    let mut config = Config::quick(&out);
    config.modes = vec![Mode::Direct, Mode::Stream];
    config.poll_interval = Duration::ZERO;

    let report = broker_bench::run(&config).expect("the quick run runs");

    assert_eq!(report.cases.len(), 4, "two modes times two sizes");
    for case in &report.cases {
        let Outcome::Measured(m) = &case.outcome else {
            panic!(
                "{} at {} was not measured: {:?}",
                case.mode, case.subscribers, case.outcome
            );
        };
        let name = format!("{} at {}", case.mode, case.subscribers);
        assert_eq!(m.mutations_sent, config.mutations, "{name}");
        assert_eq!(m.mutation_errors, 0, "{name}: {:?}", m.first_error);
        assert_eq!(
            m.expected,
            (config.mutations * case.subscribers) as u64,
            "{name}: every mutation expected on every subscriber"
        );
        assert_eq!(m.delivered, m.expected, "{name}: {m:?}");
        assert_eq!(m.lost, 0, "{name}");
        assert_eq!(m.duplicated, 0, "{name}");
        assert_eq!(m.unexpected, 0, "{name}");
        assert_eq!(m.subscriber_errors, 0, "{name}: {:?}", m.first_error);
        assert_eq!(m.mutation_latency.count, config.mutations as u64, "{name}");
        assert_eq!(m.delivery_latency.count, m.delivered, "{name}");
    }
    let modes: Vec<_> = report
        .cases
        .iter()
        .map(|c| (c.mode, c.subscribers))
        .collect();
    assert_eq!(
        modes,
        [
            (Mode::Direct, 1),
            (Mode::Direct, 10),
            (Mode::Stream, 1),
            (Mode::Stream, 10)
        ]
    );
    assert!(report.echo.count > 0, "the echo floor ran");

    let written = report.write(&out).expect("the report is written");
    let markdown = std::fs::read_to_string(&written.markdown).unwrap();
    assert!(markdown.contains("| direct | 10 |"), "{markdown}");
    assert!(markdown.contains("| stream | 1 |"), "{markdown}");
    let csv = std::fs::read_to_string(&written.csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + report.cases.len(), "{csv}");
    let columns = lines[0].split(',').count();
    assert!(
        lines.iter().all(|l| l.split(',').count() == columns),
        "{csv}"
    );
    let svg = std::fs::read_to_string(&written.svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("direct") && svg.contains("stream"));
}

#[test]
fn a_size_the_machine_cannot_hold_is_skipped_with_the_reason() {
    let limits = broker_bench::limits::Limits {
        open_files: 600,
        open_files_note: "test".into(),
        local_ports: None,
        memory_available: None,
    };
    assert_eq!(limits.refuse(1, true), None);
    let reason = limits
        .refuse(1_000, true)
        .expect("too many for 600 descriptors");
    assert!(reason.contains("file descriptors"), "{reason}");
}
