//! `broker-local`: run the broker on one machine, or mint a development token.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use local_gateway::{LocalGateway, Options};

#[derive(Parser)]
#[command(version, about = "Serverless realtime GraphQL, locally: no AWS account needed")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL over HTTP and WebSocket, and the Management API (the default command).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "BROKER_LISTEN", default_value = "127.0.0.1:4000")]
        listen: SocketAddr,
    },
    /// Print a development token for a user id, signed with the configured JWT_SECRET
    /// (or the local default), with JWT_ISSUER / JWT_AUDIENCE when set.
    Token {
        user_id: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 24 * 60 * 60)]
        ttl: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let options = Options::from_env()?;
    match Cli::parse().command {
        Some(Command::Token { user_id, ttl }) => {
            let auth = broker::Authenticator::new(options.auth);
            println!("{}", auth.mint(&user_id, ttl));
            Ok(())
        }
        Some(Command::Serve { listen }) => serve(listen, options).await,
        None => {
            let listen = std::env::var("BROKER_LISTEN")
                .ok()
                .map(|v| v.parse())
                .transpose()
                .context("BROKER_LISTEN")?
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4000)));
            serve(listen, options).await
        }
    }
}

async fn serve(listen: SocketAddr, options: Options) -> anyhow::Result<()> {
    if std::env::var("JWT_SECRET").is_err() {
        tracing::warn!("JWT_SECRET is not set: using the documented development secret");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let gateway = LocalGateway::start(listener, options.clone()).await?;
    tracing::info!(
        http = %gateway.graphql_url(),
        websocket = %gateway.websocket_url(),
        management = %gateway.management_endpoint(),
        mode = ?options.broker.delivery_mode,
        "broker-local is serving"
    );
    tokio::signal::ctrl_c().await?;
    gateway.shutdown().await;
    Ok(())
}
