//! The counting HTTP sink standing in for the Management API: `POST /@connections/{id}`
//! answers 200 and counts; `GET /count` says how many. It runs in a child process so that
//! its CPU is not the publisher's.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};

pub(crate) struct Sink {
    pub url: String,
    child: Child,
    client: reqwest::Client,
}

impl Sink {
    /// Starts this program again as `sink` and waits for its address.
    pub(crate) fn spawn() -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("sink")
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the sink")?;
        let stdout = child.stdout.take().context("the sink's output")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line.trim().to_owned();
        anyhow::ensure!(url.starts_with("http://127.0.0.1:"), "sink said {url:?}");
        Ok(Self {
            url,
            child,
            client: reqwest::Client::new(),
        })
    }

    pub(crate) async fn count(&self) -> anyhow::Result<u64> {
        let text = self
            .client
            .get(format!("{}/count", self.url))
            .send()
            .await?
            .text()
            .await?;
        Ok(text.trim().parse()?)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sink's own main: serves until killed.
pub(crate) fn serve() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let posts = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .route(
                "/@connections/{id}",
                post(|State(posts): State<Arc<AtomicU64>>| async move {
                    posts.fetch_add(1, Ordering::Relaxed);
                }),
            )
            .route(
                "/count",
                get(|State(posts): State<Arc<AtomicU64>>| async move {
                    posts.load(Ordering::Relaxed).to_string()
                }),
            )
            .with_state(posts);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}
