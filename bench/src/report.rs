//! The results: a Markdown table, a CSV and an SVG plot of latency against fan-out.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use plotters::prelude::*;

use crate::config::Mode;
use crate::limits::Limits;
use crate::stats::Percentiles;

/// The Markdown table's file name in the output directory.
pub const MARKDOWN_FILE: &str = "results.md";
/// The CSV's file name in the output directory.
pub const CSV_FILE: &str = "results.csv";
/// The plot's file name in the output directory.
pub const SVG_FILE: &str = "latency.svg";

/// A whole run.
#[derive(Debug)]
pub struct Report {
    /// What the run measured: the in-process local mode or a running broker's URL.
    pub target: String,
    /// Mutations sent per case.
    pub mutations: usize,
    /// Mutations per second asked for, before the delivery budget lowers it (see
    /// `Config::rate_at`).
    pub rate: f64,
    /// Deliveries per second a case may ask for on the in-process broker.
    pub max_delivery_rate: f64,
    /// Deliveries per second a case may ask for on the emulator.
    pub emulator_max_delivery_rate: f64,
    /// Wait between two polls of an empty stream.
    pub poll_interval: Duration,
    /// Fan-out threshold for `sqs-fanout`.
    pub fanout_threshold: usize,
    /// Subscriptions per fan-out page.
    pub fanout_page_size: usize,
    /// The floor: raw WebSocket echo round trips on loopback.
    pub echo: Percentiles,
    /// The machine's limits the run was under.
    pub limits: Limits,
    /// Every case, in the order run.
    pub cases: Vec<CaseResult>,
}

/// One mode at one fan-out size.
#[derive(Debug)]
pub struct CaseResult {
    /// The delivery design measured.
    pub mode: Mode,
    /// Subscriber connections (the fan-out size).
    pub subscribers: usize,
    /// What came of it.
    pub outcome: Outcome,
}

/// How a case ended.
#[derive(Debug)]
pub enum Outcome {
    /// The case ran: its figures.
    Measured(Box<Measurement>),
    /// The machine cannot hold this size (or this mode cannot run here): the reason.
    Skipped(String),
    /// The case started and went wrong: the error.
    Failed(String),
}

/// The figures of one case that ran.
#[derive(Debug)]
pub struct Measurement {
    /// Mutations per second sent (see `Config::rate_at`).
    pub rate: f64,
    /// Mutations sent, successful or not.
    pub mutations_sent: usize,
    /// Mutations that failed: an error in the response, or no response.
    pub mutation_errors: usize,
    /// From sending the request to the end of its response.
    pub mutation_latency: Percentiles,
    /// The mutations sent while no delivery of an earlier one was still arriving (on one
    /// machine the publisher and the API share the cores).
    pub quiet_mutation_latency: Percentiles,
    /// From sending the mutation to a subscriber receiving its `next`, per subscriber.
    pub delivery_latency: Percentiles,
    /// Successful mutations times subscribers.
    pub expected: u64,
    /// Expected deliveries received (each once).
    pub delivered: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Second and later copies of a delivery on one subscriber.
    pub duplicated: u64,
    /// Frames that were no delivery of this run's successful mutations.
    pub unexpected: u64,
    /// Subscribers whose socket failed or that received a message the protocol does not
    /// allow there.
    pub subscriber_errors: usize,
    /// From the first mutation sent to the last delivery (or last response).
    pub phase: Duration,
    /// Deliveries received per second of the phase.
    pub deliveries_per_second: f64,
    /// CPU time of the broker's threads over the phase; `None` for a broker elsewhere.
    pub broker_cpu: Option<Duration>,
    /// Opening every subscriber.
    pub setup: Duration,
    /// This process's resident memory with every subscriber open.
    pub resident_bytes: Option<u64>,
    /// The first mutation that failed and why, if one did.
    pub first_error: Option<String>,
}

impl Measurement {
    /// Broker CPU time per delivery, in microseconds.
    pub fn cpu_per_delivery_us(&self) -> Option<f64> {
        let cpu = self.broker_cpu?;
        (self.delivered > 0).then(|| cpu.as_secs_f64() * 1e6 / self.delivered as f64)
    }
}

/// The files a report was written to.
#[derive(Debug)]
pub struct Written {
    /// The Markdown table.
    pub markdown: PathBuf,
    /// The CSV, one row per case.
    pub csv: PathBuf,
    /// The SVG plot of latency against fan-out.
    pub svg: PathBuf,
}

impl Report {
    /// The cases that ran, with their figures; skipped and failed ones left out.
    pub fn measured(&self) -> impl Iterator<Item = (&CaseResult, &Measurement)> {
        self.cases.iter().filter_map(|case| match &case.outcome {
            Outcome::Measured(m) => Some((case, m.as_ref())),
            _ => None,
        })
    }

    /// Writes the table, the CSV and the plot into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<Written> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let written = Written {
            markdown: dir.join(MARKDOWN_FILE),
            csv: dir.join(CSV_FILE),
            svg: dir.join(SVG_FILE),
        };
        fs::write(&written.markdown, self.markdown())
            .with_context(|| format!("writing {}", written.markdown.display()))?;
        fs::write(&written.csv, self.csv())
            .with_context(|| format!("writing {}", written.csv.display()))?;
        fs::write(&written.svg, self.svg()?)
            .with_context(|| format!("writing {}", written.svg.display()))?;
        Ok(written)
    }

    /// The Markdown report: the setting, the table, and the notes under it.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        self.write_setting(&mut md);
        md.push_str(
            "| mode | subscribers | mutations/s | mutation p50 | p90 | p99 | max | quiet p50 (n) \
             | delivery p50 | p90 | p99 \
             | max | deliveries/s | broker CPU µs/delivery | delivered / expected | lost | \
             duplicated | delivery p50 / echo p50 |\n",
        );
        md.push_str(
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let mut notes = Vec::new();
        for case in &self.cases {
            let (mode, n) = (case.mode, case.subscribers);
            match &case.outcome {
                Outcome::Measured(m) => self.write_measured_row(&mut md, &mut notes, case, m),
                Outcome::Skipped(reason) => {
                    let _ = writeln!(md, "| {mode} | {n} | skipped{} |", " |".repeat(15));
                    notes.push(format!("{mode} at {n} skipped: {reason}"));
                }
                Outcome::Failed(reason) => {
                    let _ = writeln!(md, "| {mode} | {n} | failed{} |", " |".repeat(15));
                    notes.push(format!("{mode} at {n} failed: {reason}"));
                }
            }
        }
        md.push_str(
            "\nLatencies in ms, client clock. Mutation: request sent to response received; quiet: \
             the mutations sent while no delivery of an earlier one was arriving, and how many. \
             Delivery: mutation sent to `next` received, per subscriber. Broker CPU: the \
             broker's threads only (its own runtime), over the phase from the first mutation \
             to the last delivery, divided by the deliveries.\n",
        );
        if !notes.is_empty() {
            md.push('\n');
            for note in notes {
                let _ = writeln!(md, "- {note}");
            }
        }
        md
    }

    /// The report's opening: what ran, where, and the floor it is compared with.
    fn write_setting(&self, md: &mut String) {
        let _ = writeln!(md, "# Delivery latency: stream against direct\n");
        let _ = writeln!(md, "- Target: {}", self.target);
        let _ = writeln!(md, "- Machine: {}", machine());
        let _ = writeln!(
            md,
            "- Per case: {} mutations at {} per second, lowered at large fan-outs to keep \
             within {} deliveries per second ({} on the DynamoDB emulator); one mutation in \
             flight; stream poll interval {} ms; `sqs-fanout` threshold {} and pages of {}",
            self.mutations,
            self.rate,
            self.max_delivery_rate,
            self.emulator_max_delivery_rate,
            self.poll_interval.as_millis(),
            self.fanout_threshold,
            self.fanout_page_size
        );
        let _ = writeln!(
            md,
            "- Floor: raw WebSocket echo round trip on loopback, p50 {} ms, p99 {} ms \
             ({} round trips)",
            ms(self.echo.p50),
            ms(self.echo.p99),
            self.echo.count
        );
        let _ = writeln!(
            md,
            "- Open files limit: {} ({})\n",
            self.limits.open_files, self.limits.open_files_note
        );
    }

    /// One measured case's row of the table, and a note when something went wrong in it.
    fn write_measured_row(
        &self,
        md: &mut String,
        notes: &mut Vec<String>,
        case: &CaseResult,
        m: &Measurement,
    ) {
        let (mode, n) = (case.mode, case.subscribers);
        let (u, d) = (&m.mutation_latency, &m.delivery_latency);
        let _ = writeln!(
            md,
            "| {mode} | {n} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {:.0} \
             | {} | {} / {} | {} | {} | {} |",
            rate(m.rate),
            ms(u.p50),
            ms(u.p90),
            ms(u.p99),
            ms(u.max),
            ms(m.quiet_mutation_latency.p50),
            m.quiet_mutation_latency.count,
            ms(d.p50),
            ms(d.p90),
            ms(d.p99),
            ms(d.max),
            m.deliveries_per_second,
            m.cpu_per_delivery_us()
                .map_or("n/a".to_owned(), |us| format!("{us:.1}")),
            m.delivered,
            m.expected,
            m.lost,
            m.duplicated,
            ratio(d.p50, self.echo.p50),
        );
        if m.mutation_errors > 0 || m.unexpected > 0 || m.subscriber_errors > 0 {
            notes.push(format!(
                "{mode} at {n}: {} mutation errors, {} unexpected frames, {} \
                 subscriber errors; first: {}",
                m.mutation_errors,
                m.unexpected,
                m.subscriber_errors,
                m.first_error.as_deref().unwrap_or("none")
            ));
        }
    }

    /// One row per case, every number unrounded.
    pub fn csv(&self) -> String {
        let mut csv = String::from(
            "mode,subscribers,status,mutations_per_s,mutations_sent,mutation_errors,\
             mutation_p50_ms,mutation_p90_ms,mutation_p99_ms,mutation_max_ms,\
             quiet_mutation_p50_ms,quiet_mutations,\
             delivery_p50_ms,delivery_p90_ms,delivery_p99_ms,delivery_max_ms,\
             expected,delivered,lost,duplicated,unexpected,subscriber_errors,\
             phase_s,deliveries_per_s,broker_cpu_ms,broker_cpu_us_per_delivery,\
             setup_s,resident_mib,echo_p50_ms,poll_interval_ms,reason\n",
        );
        let echo = self.echo.p50;
        let poll = self.poll_interval.as_millis();
        for case in &self.cases {
            let (mode, n) = (case.mode, case.subscribers);
            match &case.outcome {
                Outcome::Measured(m) => {
                    let (u, d) = (&m.mutation_latency, &m.delivery_latency);
                    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
                    let _ = writeln!(
                        csv,
                        "{mode},{n},measured,{:.3},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{},{:.3},{:.3},{:.3},\
                         {:.3},{},{},{},{},{},{},{:.3},{:.1},{},{},{:.3},{},{echo:.3},{poll},{}",
                        m.rate,
                        m.mutations_sent,
                        m.mutation_errors,
                        u.p50,
                        u.p90,
                        u.p99,
                        u.max,
                        m.quiet_mutation_latency.p50,
                        m.quiet_mutation_latency.count,
                        d.p50,
                        d.p90,
                        d.p99,
                        d.max,
                        m.expected,
                        m.delivered,
                        m.lost,
                        m.duplicated,
                        m.unexpected,
                        m.subscriber_errors,
                        m.phase.as_secs_f64(),
                        m.deliveries_per_second,
                        opt(m.broker_cpu.map(|c| c.as_secs_f64() * 1e3)),
                        opt(m.cpu_per_delivery_us()),
                        m.setup.as_secs_f64(),
                        opt(m.resident_bytes.map(|b| b as f64 / (1 << 20) as f64)),
                        quote(m.first_error.as_deref().unwrap_or_default()),
                    );
                }
                Outcome::Skipped(reason) | Outcome::Failed(reason) => {
                    let status = if matches!(case.outcome, Outcome::Skipped(_)) {
                        "skipped"
                    } else {
                        "failed"
                    };
                    let empty = ",".repeat(25);
                    let _ = writeln!(
                        csv,
                        "{mode},{n},{status}{empty},{echo:.3},{poll},{}",
                        quote(reason)
                    );
                }
            }
        }
        csv
    }

    /// Latency against fan-out, both axes logarithmic: mutation latency on the left,
    /// delivery latency on the right, one colour per mode, p50 solid and p99 dashed.
    pub fn svg(&self) -> anyhow::Result<String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (1200, 520)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_error)?;
            let (title, body) = root.split_vertically(40);
            title
                .titled(
                    &format!(
                        "Latency against fan-out (p50 solid, p99 dashed; stream poll {} ms; \
                         echo floor p50 {} ms)",
                        self.poll_interval.as_millis(),
                        ms(self.echo.p50)
                    ),
                    ("sans-serif", 18),
                )
                .map_err(plot_error)?;
            let panels = body.split_evenly((1, 2));
            let modes = self.modes();
            let sizes: Vec<usize> = self.measured().map(|(c, _)| c.subscribers).collect();
            let max_size = sizes.iter().copied().max().unwrap_or(1).max(10) as f64;
            type Pick = fn(&Measurement) -> &Percentiles;
            let picks: [(&str, Pick); 2] = [
                ("Mutation latency (ms)", |m| &m.mutation_latency),
                ("Delivery latency (ms)", |m| &m.delivery_latency),
            ];
            for (panel, (caption, pick)) in panels.iter().zip(picks) {
                let values: Vec<f64> = self
                    .measured()
                    .flat_map(|(_, m)| [pick(m).p50, pick(m).p99])
                    .filter(|v| *v > 0.0)
                    .collect();
                let low = values.iter().copied().fold(f64::INFINITY, f64::min);
                let high = values.iter().copied().fold(0.0, f64::max);
                let (low, high) = if values.is_empty() {
                    (0.01, 1000.0)
                } else {
                    (low / 2.0, high * 2.0)
                };
                let mut chart = ChartBuilder::on(panel)
                    .caption(caption, ("sans-serif", 16))
                    .margin(12)
                    .x_label_area_size(40)
                    .y_label_area_size(60)
                    .build_cartesian_2d(
                        (0.8f64..max_size * 1.25).log_scale(),
                        (low..high).log_scale(),
                    )
                    .map_err(plot_error)?;
                chart
                    .configure_mesh()
                    .light_line_style(TRANSPARENT)
                    .x_desc("subscribers (fan-out)")
                    .y_desc("ms")
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .y_label_formatter(&|y| format!("{y}"))
                    .draw()
                    .map_err(plot_error)?;
                for (index, mode) in modes.iter().enumerate() {
                    let color = Palette99::pick(index).to_rgba();
                    let points = |p: fn(&Percentiles) -> f64| -> Vec<(f64, f64)> {
                        self.measured()
                            .filter(|(c, _)| c.mode == *mode)
                            .map(|(c, m)| (c.subscribers as f64, p(pick(m))))
                            .filter(|(_, v)| *v > 0.0)
                            .collect()
                    };
                    let p50 = points(|p| p.p50);
                    let p99 = points(|p| p.p99);
                    chart
                        .draw_series(LineSeries::new(p50.clone(), color.stroke_width(2)))
                        .map_err(plot_error)?
                        .label(format!("{mode}"))
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                        });
                    chart
                        .draw_series(p50.iter().map(|&xy| Circle::new(xy, 3, color.filled())))
                        .map_err(plot_error)?;
                    chart
                        .draw_series(DashedLineSeries::new(p99.clone(), 6, 4, color.into()))
                        .map_err(plot_error)?;
                    chart
                        .draw_series(p99.iter().map(|&xy| Cross::new(xy, 3, color)))
                        .map_err(plot_error)?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(plot_error)?;
            }
            root.present().map_err(plot_error)?;
        }
        Ok(svg)
    }

    /// The measured modes, in the order they ran.
    fn modes(&self) -> Vec<Mode> {
        let mut modes: Vec<Mode> = Vec::new();
        for (case, _) in self.measured() {
            if !modes.contains(&case.mode) {
                modes.push(case.mode);
            }
        }
        modes
    }
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e}")
}

/// Milliseconds with the precision they deserve.
fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn rate(per_second: f64) -> String {
    if !per_second.is_finite() {
        "unpaced".to_owned()
    } else if per_second >= 10.0 {
        format!("{per_second:.0}")
    } else {
        format!("{per_second:.2}")
    }
}

fn ratio(value: f64, floor: f64) -> String {
    if floor > 0.0 {
        format!("{:.0}×", value / floor)
    } else {
        "n/a".to_owned()
    }
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\"").replace('\n', " "))
}

/// CPU model, core count and memory, for the report's header.
pub fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or("unknown memory".to_owned(), |kib| {
            format!("{:.1} GiB", kib as f64 / (1 << 20) as f64)
        });
    format!("{cpu}, {cores} cores, {memory}")
}
