//! Which store the in-process local mode runs on, and the DynamoDB emulator for the modes
//! that need one.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use broker::aws::TableNames;
use local_gateway::aws::AwsBackend;
use local_gateway::{Backend, LocalGateway, Options};
use tokio::net::TcpListener;

use crate::config::{self, Config, Mode};

/// Whether `mode` can run with `config`; an error says why not.
pub fn check(config: &Config, mode: Mode) -> anyhow::Result<()> {
    if !config.is_local() || !mode.uses_emulator() {
        return Ok(());
    }
    if matches!(config.emulator, config::Emulator::None) {
        bail!("mode {mode} runs on the DynamoDB emulator: pass --moto, or set MOTO_ENDPOINT");
    }
    // Without credentials in the environment the SDK would look for an instance role.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        bail!(
            "mode {mode} needs credentials for the emulator in the environment, e.g. \
             AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true \
             (scripts/with-moto sets them)"
        );
    }
    Ok(())
}

/// Starts the local mode for `mode`: on the embedded store, or on fresh tables (and, for
/// `sqs-fanout`, a fresh queue) of the emulator.
pub async fn start(
    listener: TcpListener,
    mut options: Options,
    mode: Mode,
    emulator: Option<&mut Emulator>,
) -> anyhow::Result<LocalGateway> {
    if mode.uses_emulator() {
        let emulator = emulator.context("no emulator for a mode that runs on DynamoDB")?;
        options.backend = Backend::Aws(emulator.backend(mode == Mode::SqsFanout).await?);
    }
    LocalGateway::start(listener, options).await
}

/// A DynamoDB emulator endpoint, and the `moto_server` process when the benchmark started it.
#[derive(Debug)]
pub struct Emulator {
    /// The emulator's URL: the one given (`MOTO_ENDPOINT`), or that of the `moto_server`
    /// started here.
    pub endpoint: String,
    child: Option<Child>,
    /// Cases run on it so far: each gets tables (and a queue) of its own.
    cases: usize,
    tag: String,
}

impl Emulator {
    /// The emulator the configured modes need: none when every mode runs on the embedded
    /// store, the given endpoint, or a `moto_server` started here.
    pub fn start_if_needed(config: &Config) -> anyhow::Result<Option<Self>> {
        let needed = config.is_local() && config.modes.iter().any(|m| m.uses_emulator());
        if !needed {
            return Ok(None);
        }
        match &config.emulator {
            config::Emulator::None => bail!(
                "mode {} needs the DynamoDB emulator: pass --moto, or set MOTO_ENDPOINT",
                Mode::StreamDynamodb
            ),
            config::Emulator::Endpoint(endpoint) => Ok(Some(Self::at(endpoint.clone(), None))),
            config::Emulator::Start(program) => {
                let mut last = None;
                // The port is picked free, then bound by moto: another process may take
                // it in between, so try again then.
                for _ in 0..3 {
                    match Self::spawn(program) {
                        Ok(emulator) => return Ok(Some(emulator)),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.expect("three attempts"))
            }
        }
    }

    fn at(endpoint: String, child: Option<Child>) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        Self {
            endpoint,
            child,
            cases: 0,
            tag: format!("{nanos:08x}"),
        }
    }

    /// A backend on new tables, with a new fan-out queue when `fanout` is set.
    async fn backend(&mut self, fanout: bool) -> anyhow::Result<AwsBackend> {
        self.cases += 1;
        let prefix = format!("bench-{}-{}", self.tag, self.cases);
        let fanout_queue_url = if fanout {
            let sdk = broker::aws::sdk_config(Some(&self.endpoint)).await;
            let sqs = aws_sdk_sqs::Client::new(&sdk);
            let url =
                broker::aws::provision::create_fanout_queue(&sqs, &format!("{prefix}-fanout"))
                    .await
                    .context("creating the fan-out queue")?;
            Some(url)
        } else {
            None
        };
        Ok(AwsBackend {
            endpoint: Some(self.endpoint.clone()),
            tables: TableNames::new(
                format!("{prefix}-connections"),
                format!("{prefix}-subscriptions"),
                format!("{prefix}-events"),
            ),
            app_tables: AwsBackend::app_table_names(&boards::Boards, &format!("{prefix}-")),
            fanout_queue_url,
            create_tables: true,
        })
    }

    fn spawn(program: &std::path::Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut emulator = Self::at(format!("http://127.0.0.1:{port}"), Some(child));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = emulator.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("moto_server exited: {status}");
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(emulator);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("moto_server did not listen on {addr} within 30 s")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
