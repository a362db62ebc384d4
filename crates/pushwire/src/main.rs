//! The `pushwire` command: `serve`, `check-config`, `config`, `publish`,
//! `subscribe`, `token`.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde_json::json;
use tracing_subscriber::EnvFilter;

use pushwire::auth::jwt::mint::{self, ClaimsForm, KeySource, TokenRequest};
use pushwire::auth::jwt::Role;
use pushwire::config::{LogFormat, ServeConfig};
use pushwire_client::sse::ParsedEvent;
use pushwire_client::{HubClient, Reconnect};

/// A message-push hub over server-sent events.
#[derive(Parser)]
#[command(name = "pushwire", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve(ServeConfig),
    /// Load the configuration, print it as TOML and exit (2 if it is invalid).
    CheckConfig(ServeConfig),
    /// Print a configuration file with every option commented out at its default.
    Config,
    /// Publish one event.
    Publish(PublishArgs),
    /// Open a stream and print its events as JSON lines.
    Subscribe(SubscribeArgs),
    /// Mint a JSON Web Token this hub accepts and print it alone on stdout.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Args)]
struct HubArgs {
    /// Base URL of the hub.
    #[arg(long, env = "PUSHWIRE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
}

#[derive(Args)]
#[group(id = "target", required = true, multiple = false)]
struct TargetArgs {
    /// Send to this user (repeat for several).
    #[arg(long, group = "target")]
    user: Vec<String>,
    /// Send to every user whose id starts with this prefix.
    #[arg(long, group = "target")]
    prefix: Option<String>,
    /// Send to every open stream.
    #[arg(long, group = "target")]
    all: bool,
    /// Send to this topic (repeat for several).
    #[arg(long, group = "target")]
    topic: Vec<String>,
}

#[derive(Args)]
struct PublishArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// Publisher key or publisher token (`pushwire token publisher`), if the
    /// hub requires one; sent as `Authorization: Bearer`.
    #[arg(
        long,
        visible_alias = "token",
        env = "PUSHWIRE_PUBLISHER_KEY",
        hide_env_values = true
    )]
    key: Option<String>,
    #[command(flatten)]
    target: TargetArgs,
    /// Event type (the SSE `event:` field).
    #[arg(long)]
    event: Option<String>,
    /// The message. `-` reads it from standard input: all of it, byte for
    /// byte (a trailing line break included), as UTF-8 text; the hub refuses
    /// a request larger than its --max-body (1 MiB by default), which counts
    /// the message once escaped as a JSON string.
    #[arg(long)]
    data: String,
    /// Event id (otherwise the hub assigns one).
    #[arg(long)]
    id: Option<String>,
    /// Reconnection delay to send with the event, in milliseconds.
    #[arg(long)]
    retry: Option<u64>,
    /// Deliver the topic event only to streams whose subscriber token grants
    /// one of its topics (with --topic).
    #[arg(long)]
    private: bool,
}

#[derive(Args)]
struct SubscribeArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// Listen as this user.
    #[arg(long)]
    user: Option<String>,
    /// Listen to this topic (repeat for several).
    #[arg(long)]
    topic: Vec<String>,
    /// Resume after this event id.
    #[arg(long)]
    last_event_id: Option<String>,
    /// Subscriber token (`pushwire token subscriber`), sent as
    /// `Authorization: Bearer`.
    #[arg(long, env = "PUSHWIRE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Stop when the stream ends instead of reconnecting. Without it, the
    /// command reconnects as a browser does: after the stream's `retry:`
    /// (3 s by default), resuming after the last event printed; failed
    /// attempts in a row wait twice as long from the second on (up to 30 s,
    /// at least the hub's Retry-After); a refusal (401, 403, 404, ...) ends
    /// it with an error.
    #[arg(long)]
    once: bool,
    /// Give up after this many failed connection attempts in a row
    /// (default: keep trying).
    #[arg(long, value_name = "N", conflicts_with = "once", value_parser = clap::value_parser!(u32).range(1..))]
    max_failures: Option<u32>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// A subscriber token: reads the private updates of its topics, and with
    /// --user opens that user's stream.
    Subscriber(TokenArgs),
    /// A publisher token: publishes to its topics (`*` for every topic, which
    /// addressing users or everyone and the management calls need).
    Publisher(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// Topic selector the token grants: an exact topic, a URI template
    /// (`orders/{id}`) or `*`. Repeat for several.
    #[arg(long)]
    topic: Vec<String>,
    /// The token's `sub`: the user whose stream a subscriber token may open.
    #[arg(long)]
    user: Option<String>,
    /// Read the signing key from this environment variable. Without any key
    /// option, the variable the hub reads the role's key from:
    /// PUSHWIRE_SUBSCRIBER_JWT_KEY for subscriber tokens,
    /// PUSHWIRE_PUBLISHER_JWT_KEY for publisher tokens.
    #[arg(long, value_name = "VAR", conflicts_with_all = ["secret", "key_file"])]
    secret_env: Option<String>,
    /// The HMAC secret itself (visible to other users of the machine in the
    /// process list: prefer --secret-env).
    #[arg(long, value_name = "SECRET", conflicts_with = "key_file")]
    secret: Option<String>,
    /// Read the signing key from a file: a PEM private key (PKCS#8, or PKCS#1
    /// for RSA) for RS*, PS256, ES* and EdDSA, or the HMAC secret, without
    /// its trailing line break.
    #[arg(long, value_name = "PATH")]
    key_file: Option<std::path::PathBuf>,
    /// Signature algorithm, as the hub's --jwt-alg: HS256, HS384, HS512,
    /// RS256, RS384, RS512, PS256, ES256, ES384 or EdDSA.
    #[arg(
        long,
        visible_alias = "jwt-alg",
        env = "PUSHWIRE_JWT_ALG",
        default_value = "HS256"
    )]
    alg: String,
    /// How long the token is valid (`exp`), e.g. `90s`, `15m`, `30days`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
    /// The token's `aud`, the hub's --jwt-audience: required for
    /// `--claims authorization-details`; a classic token carrying it is
    /// refused by a hub configured with another audience.
    #[arg(long, visible_alias = "jwt-audience", env = "PUSHWIRE_JWT_AUDIENCE")]
    audience: Option<String>,
    /// The token's `iss`: one of the hub's --authorization-servers, which
    /// it checks on access tokens.
    #[arg(long)]
    issuer: Option<String>,
    /// Where the grants go: the classic `mercure` claim, or a current-draft
    /// access token (`typ: at+jwt`, `authorization_details`).
    #[arg(long, value_enum, default_value_t = TokenClaims::Mercure)]
    claims: TokenClaims,
}

#[derive(Clone, Copy, ValueEnum)]
enum TokenClaims {
    Mercure,
    AuthorizationDetails,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let matches = match Cli::command().try_get_matches_from(&args) {
        Ok(matches) => matches,
        Err(e) => match pushwire::config::env_value_error(&Cli::command(), &e, &args) {
            Some(message) => {
                eprintln!("pushwire: bad configuration: {message}");
                return ExitCode::from(2);
            }
            None => e.exit(),
        },
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let sub_matches = matches.subcommand().map(|(_, m)| m.clone());
    let load = || {
        sub_matches
            .as_ref()
            .map(ServeConfig::from_matches)
            .unwrap_or_else(|| Ok(ServeConfig::defaults()))
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pushwire: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(_) | Command::CheckConfig(_) => {
            let config = match load() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pushwire: bad configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            if matches!(cli.command, Command::CheckConfig(_)) {
                return match toml::to_string(&config.redacted()) {
                    Ok(text) => {
                        print!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("pushwire: {e}");
                        ExitCode::from(2)
                    }
                };
            }
            runtime.block_on(serve(config))
        }
        Command::Config => {
            print!("{}", ServeConfig::commented_defaults());
            return ExitCode::SUCCESS;
        }
        Command::Publish(args) => runtime.block_on(publish(args)),
        Command::Subscribe(args) => runtime.block_on(subscribe(args)),
        Command::Token(command) => token(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushwire: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(config: &ServeConfig) {
    // The filter was checked with the rest of the configuration.
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: never into files or the
    // journal, and never when NO_COLOR is set (https://no-color.org).
    let ansi = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    init_logs(&config);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(
            fd_limit = limit,
            "open-file limit raised; about {} streams fit",
            limit.saturating_sub(64)
        ),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
    // Before the hub says where it listens: a SIGTERM sent as soon as the
    // address is known must find the handler, not kill the process.
    let shutdown = shutdown_signal();
    let server = pushwire::server::start(config.clone()).await?;
    pushwire::startup::log_summary(&config, server.addr(), server.metrics_addr());
    if let Some(tls) = server.tls() {
        reload_on_sighup(tls.clone());
    }
    let stop = server.stop_token();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    server.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// On every SIGHUP, reads the certificate and key files again for new
/// connections; open ones keep theirs. A file that does not load leaves the
/// current certificate in place.
fn reload_on_sighup(tls: std::sync::Arc<pushwire::transport::tls::Tls>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP: the certificate cannot be reloaded");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!(
                        cert = %tls.cert_path().display(),
                        "SIGHUP: certificate reloaded; new connections use it"
                    ),
                    Err(error) => tracing::error!(
                        %error,
                        "SIGHUP: certificate not reloaded; keeping the previous one"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(tls);
}

/// SIGTERM or Ctrl-C, whichever comes first. The handlers are registered
/// when this is called, not when the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn token(command: TokenCommand) -> anyhow::Result<()> {
    let (role, args) = match command {
        TokenCommand::Subscriber(args) => (Role::Subscriber, args),
        TokenCommand::Publisher(args) => (Role::Publisher, args),
    };
    let key = match (args.secret, args.secret_env, args.key_file) {
        (Some(secret), _, _) => KeySource::Text(secret),
        (_, Some(var), _) => KeySource::Env(var),
        (_, _, Some(path)) => KeySource::File(path),
        (None, None, None) => KeySource::hub_env(role),
    };
    let request = TokenRequest {
        role,
        algorithm: args.alg,
        topics: args.topic,
        subject: args.user,
        ttl: args.ttl,
        audience: args.audience,
        issuer: args.issuer,
        form: match args.claims {
            TokenClaims::Mercure => ClaimsForm::Mercure,
            TokenClaims::AuthorizationDetails => ClaimsForm::AuthorizationDetails,
        },
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .context("the system clock is before 1970")?;
    let token = mint::mint(&request, &key, now).context("cannot mint the token")?;
    println!("{token}");
    Ok(())
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let t = args.target;
    if args.private && t.topic.is_empty() {
        anyhow::bail!("--private is for topic events: name the event's --topic");
    }
    let to = if t.all {
        json!("all")
    } else if let Some(prefix) = t.prefix {
        json!({ "user_prefix": prefix })
    } else if !t.topic.is_empty() {
        json!({ "topics": t.topic })
    } else {
        json!({ "users": t.user })
    };
    let data = match args.data.as_str() {
        "-" => read_stdin_data()?,
        _ => args.data,
    };
    let mut body = json!({ "to": to, "data": data });
    if args.private {
        body["private"] = json!(true);
    }
    if let Some(event) = args.event {
        body["event"] = json!(event);
    }
    if let Some(id) = args.id {
        body["id"] = json!(id);
    }
    if let Some(retry) = args.retry {
        body["retry"] = json!(retry);
    }
    let client = HubClient::new(&args.hub.url, args.key);
    let reply = client.publish(&body).await.context("publish failed")?;
    println!("{reply}");
    Ok(())
}

/// The largest `--max-body` a hub accepts: more than this no hub takes.
const MAX_STDIN_DATA: u64 = 1 << 30;

/// `--data -`: the whole of standard input, as UTF-8 text.
fn read_stdin_data() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_DATA + 1)
        .read_to_end(&mut bytes)
        .context("cannot read the data from standard input")?;
    if bytes.len() as u64 > MAX_STDIN_DATA {
        anyhow::bail!("the data on standard input is over 1 GiB, more than any hub accepts");
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "the data on standard input is not UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

async fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(user) = &args.user {
        query.push(("user", user));
    }
    for topic in &args.topic {
        query.push(("topic", topic));
    }
    if query.is_empty() {
        anyhow::bail!("name a --user or at least one --topic");
    }
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    let path = format!("/api/v1/stream?{query}");
    let client = HubClient::new(&args.hub.url, args.token);
    let mut stdout = std::io::stdout();
    let mut write_error = None;
    // A reader that went away (`| head -1`) stops the command.
    let print = |event: ParsedEvent| {
        let line = json!({ "id": event.id, "event": event.event, "data": event.data });
        match writeln!(stdout, "{line}") {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_error = Some(e);
                ControlFlow::Break(())
            }
        }
    };
    let last_event_id = args.last_event_id.as_deref().unwrap_or_default();
    let followed = match args.once {
        true => client.subscribe(&path, Some(last_event_id), print).await,
        false => {
            let policy = Reconnect {
                max_failures: args.max_failures,
                ..Reconnect::default()
            };
            client
                .follow(&path, last_event_id, &policy, print, |notice| {
                    eprintln!("pushwire: {notice}")
                })
                .await
        }
    };
    followed.context("subscribe failed")?;
    match write_error {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to standard output"))
        }
        _ => Ok(()),
    }
}
