//! `keel`: the control plane's one binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use keel_gateway::config::Settings;
use keel_gateway::event_log::{self, LogSource};
use keel_gateway::server::{self, Workers};
use keel_projections::kafka::ConsumerSettings;
use keel_projections::tenant_registry::TenantRegistry;

#[derive(Parser)]
#[command(name = "keel", version, about = "Keel, the control plane for B2B SaaS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Owner {
    /// Postgres URL of the migration role (owner of the schema).
    #[arg(long, env = "KEEL_MIGRATION_DATABASE_URL")]
    migration_database_url: String,
    /// The runtime role that gets grants.
    #[arg(long, env = "KEEL_RUNTIME_ROLE", default_value = "keel_app")]
    runtime_role: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC and REST APIs, the relay, the projectors and the schedulers.
    Serve(Settings),
    /// Create or upgrade the database schema (as the migration role).
    Migrate(Owner),
    /// Create the bootstrap operator credential if none exists; write it to --out and print it once.
    BootstrapToken {
        #[command(flatten)]
        owner: Owner,
        /// Where to write the token (mode 600).
        #[arg(long)]
        out: PathBuf,
        /// Do not print the token (only write it), e.g. where stdout ends up in logs.
        #[arg(long)]
        quiet: bool,
    },
    /// Rebuild a read model from Kafka offset 0 and swap it in atomically; or, with
    /// --tenant, print one tenant's state at --until as JSON, rebuilt from the log alone.
    Replay {
        /// The read model to rebuild (tenant_registry, flag_snapshots, …); not with --tenant.
        read_model: Option<String>,
        /// Instead: rebuild this tenant's registry entry, users, flags and entitlements from
        /// the log and print them (no database needed).
        #[arg(long)]
        tenant: Option<String>,
        /// With --tenant: the moment (RFC 3339, e.g. 2026-05-01T12:00:00Z); default now.
        #[arg(long)]
        until: Option<String>,
        /// With --tenant: read this export (`keel log export`) instead of Kafka (offline).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Postgres URL of the migration role (to rebuild a read model).
        #[arg(long, env = "KEEL_MIGRATION_DATABASE_URL")]
        migration_database_url: Option<String>,
        /// The runtime role that gets grants.
        #[arg(long, env = "KEEL_RUNTIME_ROLE", default_value = "keel_app")]
        runtime_role: String,
        /// Kafka bootstrap servers.
        #[arg(long, env = "KEEL_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        kafka_brokers: String,
        /// The event topic.
        #[arg(long, env = "KEEL_EVENTS_TOPIC", default_value = "keel.events")]
        events_topic: String,
    },
    /// The event log as a whole.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Dead letters of a read model.
    Dlq {
        #[command(subcommand)]
        command: Dlq,
    },
    /// Platform accounts.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Managed apps and their API keys (prints JSON).
    App {
        #[command(subcommand)]
        command: AppCli,
    },
    /// Access-token signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The audit trail, for auditors.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Write the JSON Schemas of the events to a directory (or check they are current).
    Schemas {
        /// Directory.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
        /// Only check; exit non-zero if a file is missing or stale.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Write the whole event log (every partition from offset 0 to its end when the export
    /// starts) to an NDJSON file, one envelope per line, each partition in order: the export
    /// that `keel replay --tenant … --file` reads offline.
    Export {
        /// The file to write (it appears only once complete).
        #[arg(long)]
        out: PathBuf,
        /// Kafka bootstrap servers.
        #[arg(long, env = "KEEL_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        kafka_brokers: String,
        /// The event topic.
        #[arg(long, env = "KEEL_EVENTS_TOPIC", default_value = "keel.events")]
        events_topic: String,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Create a platform operator (or auditor) who signs in with e-mail and password at
    /// `POST /v1/auth/login` (no tenant). The first one retires the bootstrap credential.
    Create {
        /// The account's e-mail.
        #[arg(long)]
        email: String,
        /// The password (or set KEEL_OPERATOR_PASSWORD, which stays out of process lists).
        #[arg(long, env = "KEEL_OPERATOR_PASSWORD", hide_env_values = true)]
        password: String,
        /// operator or auditor.
        #[arg(long, default_value = "operator")]
        role: String,
        #[command(flatten)]
        owner: Owner,
    },
}

#[derive(Subcommand)]
enum AppCli {
    /// Register a managed app; prints {"app_id", "position"}.
    Register {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Environment, e.g. production.
        #[arg(long)]
        environment: String,
        /// Makes a retry safe (a fresh one by default).
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        owner: Owner,
    },
    /// Issue an API key; prints {"key_id", "secret", …}. The secret is shown this once.
    IssueKey {
        /// The app.
        #[arg(long)]
        app: String,
        /// flags:read, billing:write, billing:read, audit:write or fleet:write (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// RFC 3339 time after which the key stops working.
        #[arg(long)]
        expires_at: Option<String>,
        /// Makes a retry safe (a fresh one by default).
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        owner: Owner,
    },
    /// Revoke an API key for good.
    RevokeKey {
        /// The app.
        #[arg(long)]
        app: String,
        /// The key.
        #[arg(long)]
        key: String,
        #[command(flatten)]
        owner: Owner,
    },
    /// Block an app and all its keys.
    Disable {
        /// The app.
        #[arg(long)]
        app: String,
        #[command(flatten)]
        owner: Owner,
    },
    /// Lift a disable.
    Enable {
        /// The app.
        #[arg(long)]
        app: String,
        #[command(flatten)]
        owner: Owner,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every audit chain and check every signed checkpoint; report the first
    /// broken link (exit status 1). Reads the Kafka log, a log export (`--file`, from
    /// `keel log export`) or a CSV export (`--csv`, from GET /v1/audit/export.csv, with
    /// `--checkpoints` from GET /v1/audit/checkpoints). Needs no database.
    Verify {
        /// The public keys to trust (the JSON of GET /v1/audit/keys, kept by the auditor).
        #[arg(long)]
        keys: std::path::PathBuf,
        /// A log export (NDJSON envelopes) instead of Kafka.
        #[arg(long, conflicts_with = "csv")]
        file: Option<std::path::PathBuf>,
        /// A CSV export of the audit trail instead of the log.
        #[arg(long)]
        csv: Option<std::path::PathBuf>,
        /// The checkpoints (JSON array) for a CSV export.
        #[arg(long, requires = "csv")]
        checkpoints: Option<std::path::PathBuf>,
        /// Kafka bootstrap servers.
        #[arg(long, env = "KEEL_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        kafka_brokers: String,
        /// The event topic.
        #[arg(long, env = "KEEL_EVENTS_TOPIC", default_value = "keel.events")]
        events_topic: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a signing key: published in the JWKS at once, signing after --publish-ahead;
    /// the older keys keep verifying for --retire-after more, then leave the JWKS.
    Rotate {
        /// Seconds between publishing the key and signing with it (let verifiers fetch the JWKS).
        #[arg(long, default_value_t = 60)]
        publish_ahead: u64,
        /// Seconds the old keys stay published once the new one signs (at least the access-token lifetime).
        #[arg(long, default_value_t = 900)]
        retire_after: u64,
        #[command(flatten)]
        owner: Owner,
    },
}

#[derive(Subcommand)]
enum Dlq {
    /// List parked events.
    List {
        /// The read model.
        read_model: String,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        owner: Owner,
    },
    /// Discard one parked event for good (the events held behind it stay parked until retried).
    Discard {
        /// The read model.
        read_model: String,
        /// The parked event's id (from `keel dlq list`).
        #[arg(long)]
        id: i64,
        #[command(flatten)]
        owner: Owner,
    },
    /// Retry a tenant's parked events, in order.
    Retry {
        /// The read model.
        read_model: String,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        owner: Owner,
    },
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,rdkafka=warn"));
    if json {
        tracing_subscriber::fmt().json().with_current_span(true).with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).init();
    }
}

async fn owner_pool(owner: &Owner) -> Result<PgPool, String> {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&owner.migration_database_url)
        .await
        .map_err(|e| format!("cannot connect as the migration role: {e}"))
}

use keel_projections::READ_MODELS;

/// Runs `$body` with `$model` bound to the read model named `$name` (one arm per read model).
macro_rules! with_read_model {
    ($name:expr, |$model:ident| $body:expr) => {
        match $name {
            keel_projections::tenant_registry::NAME => {
                let $model = &TenantRegistry;
                $body
            }
            keel_projections::routing::NAME => {
                let $model = &keel_projections::routing::RoutingModel;
                $body
            }
            keel_projections::flag_snapshots::NAME => {
                let $model = &keel_projections::flag_snapshots::FlagSnapshots;
                $body
            }
            keel_projections::billing_ledger::NAME => {
                let $model = &keel_projections::billing_ledger::BillingLedger;
                $body
            }
            keel_projections::billing_rollups::NAME => {
                let $model = &keel_projections::billing_rollups::BillingRollups;
                $body
            }
            keel_projections::audit_trail::NAME => {
                let $model = &keel_projections::audit_trail::AuditTrail;
                $body
            }
            other => Err(format!("unknown read model {other:?}; known: {}", READ_MODELS.join(", "))),
        }
    };
}

/// Refuses a read model name this build does not know.
fn known(name: &str) -> Result<(), String> {
    with_read_model!(name, |_model| Ok(()))
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve(settings) => {
            let running = server::start(settings, Workers::ALL).await.map_err(|e| e.to_string())?;
            let stopped = running.stopped();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate() => {}
                _ = stopped => {}
            }
            tracing::info!("stopping");
            running.stop().await;
            Ok(())
        }
        Command::Migrate(owner) => {
            let pool = owner_pool(&owner).await?;
            let applied = keel_commands::migrate::run(&pool, keel_commands::migrate::MIGRATIONS, &owner.runtime_role)
                .await
                .map_err(|e| e.to_string())?;
            for name in &applied {
                println!("applied {name}");
            }
            let created = keel_projections::ensure_schemas(&pool, &owner.runtime_role)
                .await
                .map_err(|e| format!("read model schema: {e}"))?;
            for name in created {
                println!("created read model {name}");
            }
            println!("schema is current");
            Ok(())
        }
        Command::BootstrapToken { owner, out, quiet } => {
            let pool = owner_pool(&owner).await?;
            match keel_gateway::auth::create_bootstrap_credential(&pool).await.map_err(|e| e.to_string())? {
                Some(token) => {
                    write_secret(&out, &token).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
                    if !quiet {
                        println!("{token}");
                    }
                    eprintln!("bootstrap operator credential created and written to {}", out.display());
                }
                None => eprintln!("a bootstrap operator credential exists already (see {})", out.display()),
            }
            Ok(())
        }
        Command::Replay {
            read_model,
            tenant,
            until,
            file,
            migration_database_url,
            runtime_role,
            kafka_brokers,
            events_topic,
        } => {
            let read_model = match (read_model, tenant) {
                (Some(read_model), None) if until.is_none() && file.is_none() => read_model,
                (Some(_), None) => return Err("--until and --file go with --tenant".into()),
                (None, Some(tenant)) => return replay_tenant(&tenant, until, file, kafka_brokers, events_topic).await,
                (Some(_), Some(_)) => {
                    return Err("give either a read model to rebuild or --tenant <id>, not both".into());
                }
                (None, None) => {
                    return Err("give a read model to rebuild (e.g. `keel replay tenant_registry`) or \
                                `--tenant <id> [--until TIME] [--file EXPORT]` to print a tenant's state"
                        .into());
                }
            };
            let migration_database_url = migration_database_url
                .ok_or("rebuilding a read model needs --migration-database-url or KEEL_MIGRATION_DATABASE_URL")?;
            let owner = Owner { migration_database_url, runtime_role };
            known(&read_model)?;
            let pool = owner_pool(&owner).await?;
            let settings = ConsumerSettings { brokers: kafka_brokers, session_timeout_ms: 6000 };
            let bar = ProgressBar::new(0).with_style(
                ProgressStyle::with_template("{spinner} replay [{bar:40}] {pos}/{len} events {per_sec} eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let report = with_read_model!(read_model.as_str(), |model| {
                keel_projections::replay::replay(model, &pool, &settings, &events_topic, &owner.runtime_role, &bar)
                    .await
                    .map_err(|e| e.to_string())
            })?;
            println!(
                "replayed {read_model}: {} events in {:.2}s ({:.0} events/s); swapped in",
                report.messages,
                report.elapsed.as_secs_f64(),
                report.rate()
            );
            Ok(())
        }
        Command::Log { command: LogCommand::Export { out, kafka_brokers, events_topic } } => {
            let source = LogSource::Kafka { brokers: kafka_brokers, topic: events_topic };
            let bar = event_log::progress_bar(&source);
            let events = event_log::export(&source, &out, &bar).await.map_err(|e| e.to_string())?;
            println!("exported {events} events to {}", out.display());
            Ok(())
        }
        Command::Dlq { command } => match command {
            Dlq::List { read_model, tenant, owner } => {
                known(&read_model)?;
                let pool = owner_pool(&owner).await?;
                let parked = keel_projections::dead_letters::list(&pool, &read_model, tenant.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                println!("{}", serde_json::to_string_pretty(&parked).unwrap_or_default());
                Ok(())
            }
            Dlq::Discard { read_model, id, owner } => {
                known(&read_model)?;
                let pool = owner_pool(&owner).await?;
                match keel_projections::dead_letters::discard(&pool, &read_model, id)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    true => println!("discarded parked event {id}"),
                    false => return Err(format!("no parked event {id}")),
                }
                Ok(())
            }
            Dlq::Retry { read_model, tenant, owner } => {
                known(&read_model)?;
                let pool = owner_pool(&owner).await?;
                let outcome = with_read_model!(read_model.as_str(), |model| {
                    keel_projections::dead_letters::retry(&pool, model, &tenant).await.map_err(|e| e.to_string())
                })?;
                println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
                Ok(())
            }
        },
        Command::Operator { command: OperatorCommand::Create { email, password, role, owner } } => {
            let pool = owner_pool(&owner).await?;
            let user_id = keel_gateway::auth::create_platform_user(&pool, &email, &password, &role).await?;
            println!("{user_id}");
            if keel_gateway::auth::retire_bootstrap_credential(&pool).await.map_err(|e| e.to_string())? {
                eprintln!("the bootstrap operator credential is retired; sign in with the new account");
            }
            Ok(())
        }
        Command::App { command } => app_command(command).await,
        Command::Audit {
            command: AuditCommand::Verify { keys, file, csv, checkpoints, kafka_brokers, events_topic },
        } => {
            use keel_gateway::audit_verify;
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
            };
            let keys = audit_verify::keys_from_json(&read(&keys)?).map_err(|e| e.to_string())?;
            let report = match csv {
                Some(csv) => {
                    let checkpoints: Vec<keel_domain::audit::Checkpoint> = match checkpoints {
                        Some(path) => serde_json::from_str(&read(&path)?)
                            .map_err(|e| format!("{}: not a list of checkpoints: {e}", path.display()))?,
                        None => Vec::new(),
                    };
                    let bar =
                        keel_gateway::event_log::progress_bar(&keel_gateway::event_log::LogSource::File(csv.clone()));
                    audit_verify::verify_csv(&csv, &checkpoints, &keys, &bar)
                }
                None => {
                    let source = match file {
                        Some(path) => keel_gateway::event_log::LogSource::File(path),
                        None => {
                            keel_gateway::event_log::LogSource::Kafka { brokers: kafka_brokers, topic: events_topic }
                        }
                    };
                    let bar = keel_gateway::event_log::progress_bar(&source);
                    audit_verify::verify_log(&source, &keys, &bar).await
                }
            }
            .map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            match &report.broken {
                None => Ok(()),
                Some(broken) => Err(format!("audit trail broken: {broken}")),
            }
        }
        Command::Keys { command: KeysCommand::Rotate { publish_ahead, retire_after, owner } } => {
            let pool = owner_pool(&owner).await?;
            let kid = keel_gateway::tokens::rotate_keys(
                &pool,
                Duration::from_secs(publish_ahead),
                Duration::from_secs(retire_after),
            )
            .await
            .map_err(|e| e.to_string())?;
            println!("{kid}");
            Ok(())
        }
        Command::Schemas { out, check } => {
            let mut stale = Vec::new();
            for (name, schema) in keel_domain::schemas::all() {
                let path = out.join(name);
                let text = keel_domain::schemas::render(&schema);
                if check {
                    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                        stale.push(path.display().to_string());
                    }
                } else {
                    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
                    std::fs::write(&path, text).map_err(|e| e.to_string())?;
                    println!("wrote {}", path.display());
                }
            }
            if stale.is_empty() {
                Ok(())
            } else {
                Err(format!("stale schemas (run `keel schemas`): {}", stale.join(", ")))
            }
        }
    }
}

/// `keel replay --tenant`: prints the tenant's state at `until` (default now) as JSON.
async fn replay_tenant(
    tenant: &str,
    until: Option<String>,
    file: Option<PathBuf>,
    kafka_brokers: String,
    events_topic: String,
) -> Result<(), String> {
    let tenant_id: keel_domain::ids::TenantId =
        tenant.trim().parse().map_err(|e: keel_domain::ids::MalformedId| format!("--tenant: {e}"))?;
    let until = match until {
        Some(raw) => chrono::DateTime::parse_from_rfc3339(raw.trim())
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| "--until must be an RFC 3339 time, e.g. 2026-05-01T12:00:00Z".to_string())?,
        None => chrono::Utc::now(),
    };
    let source = match file {
        Some(path) => LogSource::File(path),
        None => LogSource::Kafka { brokers: kafka_brokers, topic: events_topic },
    };
    let bar = event_log::progress_bar(&source);
    let state = keel_gateway::tenant_replay::replay_tenant(&source, tenant_id.as_str(), until, &bar)
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string_pretty(&state).map_err(|e| e.to_string())?);
    Ok(())
}

async fn app_command(command: AppCli) -> Result<(), String> {
    use keel_commands::apps::AppCommands;
    use keel_commands::bus::CommandContext;
    use keel_domain::app::AppCommand;
    use keel_domain::envelope::Actor;
    use keel_domain::ids::{ApiKeyId, AppId};
    let context = |key: Option<String>| {
        let key = key.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        CommandContext::new(Actor::system("keel-cli"), uuid::Uuid::now_v7().to_string(), key)
    };
    let app_id = |raw: &str| raw.trim().parse::<AppId>().map_err(|e| e.to_string());
    let commands = |owner: Owner| async move {
        let pool = owner_pool(&owner).await?;
        AppCommands::new(pool).await.map_err(|e| e.to_string())
    };
    let simple = |app: String, owner: Owner, make: fn(chrono::DateTime<chrono::Utc>) -> AppCommand| async move {
        let id = app_id(&app)?;
        let ctx = context(None);
        let done = commands(owner).await?.execute(&ctx, &id, make(ctx.received_at)).await.map_err(|e| e.message)?;
        Ok::<_, String>(serde_json::json!({ "app_id": id.as_str(), "position": done.position }))
    };
    let out = match command {
        AppCli::Register { name, environment, idempotency_key, owner } => {
            let done = commands(owner)
                .await?
                .register(&context(idempotency_key), &name, &environment)
                .await
                .map_err(|e| e.message)?;
            serde_json::json!({ "app_id": done.app_id, "position": done.position })
        }
        AppCli::IssueKey { app, scopes, expires_at, idempotency_key, owner } => {
            let id = app_id(&app)?;
            let expires_at = expires_at
                .map(|raw| chrono::DateTime::parse_from_rfc3339(&raw).map(|t| t.with_timezone(&chrono::Utc)))
                .transpose()
                .map_err(|_| "--expires-at must be an RFC 3339 time".to_string())?;
            let key = commands(owner)
                .await?
                .issue_key(&context(idempotency_key), &id, &scopes, expires_at)
                .await
                .map_err(|e| e.message)?;
            serde_json::to_value(&key).map_err(|e| e.to_string())?
        }
        AppCli::RevokeKey { app, key, owner } => {
            let id = app_id(&app)?;
            let key_id: ApiKeyId = key.trim().parse().map_err(|e: keel_domain::ids::MalformedId| e.to_string())?;
            let ctx = context(None);
            let command = AppCommand::RevokeKey { key_id, at: ctx.received_at };
            let done = commands(owner).await?.execute(&ctx, &id, command).await.map_err(|e| e.message)?;
            serde_json::json!({ "app_id": id.as_str(), "key_id": key.trim(), "position": done.position })
        }
        AppCli::Disable { app, owner } => simple(app, owner, |_| AppCommand::Disable).await?,
        AppCli::Enable { app, owner } => simple(app, owner, |_| AppCommand::Enable).await?,
    };
    println!("{out}");
    Ok(())
}

fn write_secret(path: &PathBuf, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    writeln!(file, "{secret}")
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Serve(_)));
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("keel: {message}");
            ExitCode::FAILURE
        }
    }
}
