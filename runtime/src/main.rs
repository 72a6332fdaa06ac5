//! The `swarmtel` command: replay an event stream through sandboxed recorders, inspect a
//! plugin, or check a config.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

use swarmtel::bindings::types as wit;
use swarmtel::cache::CompileCache;
use swarmtel::config::Config;
use swarmtel::guest_text::{capped, shown};
use swarmtel::pipeline::{self, Pipeline, RunError};
use swarmtel::plugin::{self, option_type_name, option_value_json};
use swarmtel::sandbox::Sandbox;
use swarmtel::sinks::Outputs;

/// WebAssembly-sandboxed telemetry recorders for Locust load tests.
#[derive(Debug, Parser)]
#[command(name = "swarmtel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay an NDJSON event stream through the config's plugins and print telemetry.
    Replay {
        /// The config file (TOML).
        #[arg(long, env = "SWARMTEL_CONFIG")]
        config: PathBuf,
        /// The event stream: a file, or `-` for stdin.
        #[arg(env = "SWARMTEL_EVENTS", default_value = "-")]
        events: String,
        /// Stop at the first malformed line instead of reporting and skipping it.
        #[arg(long, env = "SWARMTEL_STRICT")]
        strict: bool,
    },
    /// Serve live Locust runs: accept bridge connections and run their events through the
    /// config's plugins until SIGINT or SIGTERM.
    Serve {
        /// The config file (TOML).
        #[arg(long, env = "SWARMTEL_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Work with plugin files.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Check a config: parse it, load every plugin, resolve options, probe every recorder.
    Check {
        /// The config file (TOML).
        #[arg(long, env = "SWARMTEL_CONFIG")]
        config: PathBuf,
    },
    /// Work with the compile cache of precompiled plugins.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
        /// The cache folder (default: $XDG_CACHE_HOME/swarmtel or ~/.cache/swarmtel).
        #[arg(long, env = "SWARMTEL_CACHE_DIR", global = true)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Compile every plugin of a config into the cache ahead of time, with the engine
    /// settings the config's runs use, so the first `serve` or `replay` starts fast.
    Build {
        /// The config file (TOML); its `[cache] dir` is used unless `--dir` is given.
        #[arg(long, env = "SWARMTEL_CONFIG")]
        config: PathBuf,
    },
    /// List cached entries.
    Ls,
    /// Delete every cached entry.
    Clear,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Print what a plugin says about itself: id, version, options, recorders, schemas.
    Inspect {
        /// The plugin's `.wasm` component.
        plugin: PathBuf,
        /// Print JSON instead of text.
        #[arg(long, env = "SWARMTEL_JSON")]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay {
            config,
            events,
            strict,
        } => replay(&config, &events, strict),
        Command::Serve { config, args } => serve(&config, args),
        Command::Plugin {
            command: PluginCommand::Inspect { plugin, json },
        } => inspect(&plugin, json),
        Command::Check { config } => check(&config),
        Command::Cache { command, dir } => cache(command, dir),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            swarmtel::diag!("swarmtel: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(
                cause.downcast_ref::<RunError>(),
                Some(RunError::Output { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe
            )
    })
}

/// The engine for a config: fuel metering only when some plugin sets a fuel budget, and the
/// compile cache unless the config turns it off. A cache folder that cannot be used is
/// reported and the run goes on without it.
fn sandbox_for(config: &Config) -> anyhow::Result<Sandbox> {
    let fuel = config
        .plugins
        .iter()
        .any(|plugin| plugin.limits.fuel_per_call.is_some());
    let mut sandbox = Sandbox::with_fuel(fuel)?;
    if config.cache.enabled {
        let dir = match &config.cache.dir {
            Some(dir) => Ok(config.resolve(dir)),
            None => CompileCache::default_dir(&env_var),
        };
        match dir.and_then(|dir| CompileCache::open(&dir)) {
            Ok(cache) => sandbox.set_cache(cache),
            Err(error) => swarmtel::diag!("swarmtel: warning: {error}; compiling without a cache"),
        }
    }
    Ok(sandbox)
}

fn cache_report(sandbox: &Sandbox) {
    if let Some(cache) = sandbox.cache() {
        let stats = sandbox.cache_stats();
        swarmtel::diag!(
            "swarmtel: compile cache {}: {} hits, {} compiled, {} rejected",
            cache.dir().display(),
            stats.hits,
            stats.compiled,
            stats.rejected
        );
    }
}

fn cache(command: CacheCommand, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    if let CacheCommand::Build { config } = &command {
        return cache_build(config, dir);
    }
    let dir = match dir {
        Some(dir) => dir,
        None => CompileCache::default_dir(&env_var)?,
    };
    let cache = CompileCache::open(&dir)?;
    match command {
        CacheCommand::Ls => {
            let entries = cache.entries()?;
            for entry in &entries {
                println!("{:>12}  {}", entry.bytes, entry.name);
            }
            let total: u64 = entries.iter().map(|e| e.bytes).sum();
            println!(
                "{} entries, {total} bytes in {}",
                entries.len(),
                dir.display()
            );
        }
        CacheCommand::Build { .. } => unreachable!("handled above"),
        CacheCommand::Clear => {
            let removed = cache.clear()?;
            println!("removed {removed} entries from {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `swarmtel cache build`: compiles each plugin of a config into the cache (one line per
/// plugin on stdout), with the engine the config's runs use.
fn cache_build(config_path: &Path, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(config_path)?;
    // `--dir` wins over the config; SWARMTEL_CACHE_DIR (which clap also puts in `dir`) only
    // where the config names no folder, as in runs.
    let from_env = std::env::var_os("SWARMTEL_CACHE_DIR").map(PathBuf::from);
    if let Some(dir) = dir.filter(|dir| Some(dir) != from_env.as_ref()) {
        config.cache.enabled = true;
        config.cache.dir = Some(std::path::absolute(&dir)?);
    }
    anyhow::ensure!(
        config.cache.enabled,
        "{}: [cache] enabled = false: there is no cache to build (give --dir to build one anyway)",
        config_path.display()
    );
    let sandbox = sandbox_for(&config)?;
    let Some(cache) = sandbox.cache() else {
        anyhow::bail!("the compile cache cannot be used (see the warning above)");
    };
    let dir = cache.dir().to_owned();
    let (mut compiled, mut cached) = (0, 0);
    for entry in &config.plugins {
        let path = config.plugin_path(entry);
        let bytes = std::fs::read(&path).map_err(|source| plugin::PluginError::Read {
            path: path.clone(),
            source,
        })?;
        let before = sandbox.cache_stats();
        let started = std::time::Instant::now();
        sandbox
            .compile(&bytes, &path.display().to_string())
            .map_err(|error| plugin::PluginError::Compile {
                path: path.clone(),
                message: format!("{error:#}"),
            })?;
        let hit = sandbox.cache_stats().hits > before.hits;
        let (what, count) = if hit {
            ("cached  ", &mut cached)
        } else {
            ("compiled", &mut compiled)
        };
        *count += 1;
        println!(
            "{what}  {:>7.1} MB  {:>6.2} s  {}",
            bytes.len() as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            path.display()
        );
    }
    println!(
        "{} plugins: {compiled} compiled, {cached} already cached, in {}",
        config.plugins.len(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn replay(config_path: &Path, events: &str, strict: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let sandbox = Arc::new(sandbox_for(&config)?);
    let sandbox_ref = sandbox.clone();
    let outputs = Outputs::from_config(&config)?;
    let pipeline = Pipeline::new(sandbox, &config, outputs, &env_var)?;
    let (input, source_name): (Box<dyn std::io::Read + Send>, String) = if events == "-" {
        (Box::new(std::io::stdin()), "stdin".to_owned())
    } else {
        let file = std::fs::File::open(events)
            .with_context(|| format!("cannot open event stream {events}"))?;
        (Box::new(file), events.to_owned())
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C: the user wants out now.
            std::process::exit(130);
        }
        swarmtel::diag!("swarmtel: interrupted; finishing recorders and flushing outputs (Ctrl-C again to abort)");
    })
    .context("cannot install the Ctrl-C handler")?;
    let summary =
        swarmtel::sources::replay::run_stream(pipeline, input, &source_name, strict, &stop)?;
    swarmtel::diag_text!("{}", summary.render());
    cache_report(&sandbox_ref);
    swarmtel::sinks::prometheus::linger_after_run(&|| stop.load(Ordering::SeqCst));
    Ok(if summary.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// `serve`'s settings from the command line.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Where to listen: unix:/path, tcp:host:port or host:port; repeat for several
    /// (default: unix:$XDG_RUNTIME_DIR/swarmtel/serve.sock or
    /// unix:/tmp/swarmtel-<uid>/serve.sock).
    #[arg(long, env = "SWARMTEL_LISTEN", value_delimiter = ',')]
    listen: Vec<String>,
    /// A shared secret every connection must present; required to listen beyond loopback.
    #[arg(long, env = "SWARMTEL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// When the recorders cannot keep up: block the connection (the bridge then drops
    /// and counts on its side) or drop here and count.
    #[arg(long, env = "SWARMTEL_OVERLOAD", value_enum, default_value = "block")]
    overload: swarmtel::sources::serve::Overload,
    /// After SIGINT or SIGTERM, how long open connections may go on before they are
    /// closed.
    #[arg(long, env = "SWARMTEL_DRAIN_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    drain_timeout: std::time::Duration,
    /// MiB of read event lines queued in front of the recorders, across all connections;
    /// past it the overload policy applies.
    #[arg(long, env = "SWARMTEL_QUEUE_MIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    queue_mib: u32,
    /// The run id for clients that send none (overrides the config's `run.run_id`).
    #[arg(long, env = "SWARMTEL_RUN_ID")]
    run_id: Option<String>,
    /// The test plan for clients that name none (overrides the config's `run.testplan`).
    #[arg(long, env = "SWARMTEL_TESTPLAN")]
    testplan: Option<String>,
    /// Progress on stderr: a live line on a terminal and a log line every 10 s otherwise
    /// (auto), or always one of them, or neither.
    #[arg(long, env = "SWARMTEL_STATUS", value_enum, default_value = "auto")]
    status: swarmtel::sources::serve::StatusMode,
    /// How long a new connection has to send its hello.
    #[arg(long, env = "SWARMTEL_HELLO_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    hello_timeout: std::time::Duration,
    /// Most connections open at once; more are refused with the reason.
    #[arg(long, env = "SWARMTEL_MAX_CONNECTIONS", default_value_t = 256)]
    max_connections: usize,
}

fn serve(config_path: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    use swarmtel::sources::wire::Endpoint;
    let mut config = Config::load(config_path)?;
    if let Some(run_id) = args.run_id {
        config.run.run_id = Some(run_id);
    }
    if let Some(testplan) = args.testplan {
        config.run.testplan = testplan;
    }
    let listen = if args.listen.is_empty() {
        vec![Endpoint::default_for(&env_var)]
    } else {
        args.listen
            .iter()
            .map(|text| Endpoint::parse(text))
            .collect::<Result<_, _>>()?
    };
    let token = args.token.filter(|token| !token.is_empty());
    // Everything but the plugins' own code is checked before listening; the plugins load (and
    // compile, on a cold cache) while the first connections are already accepted and held.
    pipeline::check_plugin_files(&config)?;
    let run = config
        .run
        .run_id
        .get_or_insert_with(pipeline::generate_run_id)
        .clone();
    let sandbox = Arc::new(sandbox_for(&config)?);
    let sandbox_ref = sandbox.clone();
    let outputs = Outputs::from_config(&config)?;
    let pipeline = swarmtel::sources::serve::PendingPipeline {
        run: swarmtel::pipeline::enrich::RunContext {
            run_id: run,
            testplan: config.run.testplan.clone(),
        },
        build: Box::new(move || Pipeline::new(sandbox, &config, outputs, &env_var)),
    };
    let options = swarmtel::sources::serve::ServeOptions {
        listen,
        token,
        overload: args.overload,
        drain_timeout: args.drain_timeout,
        queue_bytes: args.queue_mib as usize * 1024 * 1024,
        status: args.status,
        hello_timeout: args.hello_timeout,
        max_connections: args.max_connections,
    };
    let report = swarmtel::sources::serve::serve(pipeline, options)?;
    swarmtel::diag_text!("{}", report.summary.render());
    swarmtel::diag_text!("{}", report.connections.render());
    cache_report(&sandbox_ref);
    if swarmtel::sinks::prometheus::lingering() {
        let signalled = signal_flag();
        swarmtel::sinks::prometheus::linger_after_run(&|| signalled.load(Ordering::SeqCst));
    }
    Ok(ExitCode::SUCCESS)
}

/// A flag set by the next SIGINT or SIGTERM (for the linger after `serve`, whose own signal
/// handling has ended with its run).
fn signal_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    // Returns once the listeners are registered: a signal before that would be missed.
    let (ready, registered) = std::sync::mpsc::channel::<()>();
    let _ = std::thread::Builder::new()
        .name("swarmtel-signals".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut interrupt), Ok(mut terminate)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                let _ = ready.send(());
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                set.store(true, Ordering::SeqCst);
            });
        });
    // Without listeners (the thread or runtime failed), the linger runs its course.
    let _ = registered.recv_timeout(std::time::Duration::from_secs(5));
    flag
}

/// The Locust name of an event kind, as in the event stream.
fn event_name(kind: wit::EventKind) -> &'static str {
    use wit::EventKind as K;
    match kind {
        K::TestStart => "test_start",
        K::TestStopping => "test_stopping",
        K::TestStop => "test_stop",
        K::SpawningComplete => "spawning_complete",
        K::Request => "request",
        K::UserError => "user_error",
        K::CpuWarning => "cpu_warning",
        K::UsageMonitor => "usage_monitor",
        K::WorkerConnect => "worker_connect",
        K::WorkerReport => "worker_report",
        K::HeartbeatSent => "heartbeat_sent",
        K::HeartbeatReceived => "heartbeat_received",
        K::ResetStats => "reset_stats",
        K::Quitting => "quitting",
        K::Quit => "quit",
        K::StatsSnapshot => "stats",
        K::Tick => "tick",
        K::ProcessSample => "process_sample",
    }
}

fn role_names(roles: &[wit::Role]) -> Vec<&'static str> {
    roles
        .iter()
        .map(|role| match role {
            wit::Role::Master => "master",
            wit::Role::Worker => "worker",
            wit::Role::Standalone => "standalone",
        })
        .collect()
}

fn describe_json(info: &wit::PluginInfo, path: &Path) -> serde_json::Value {
    json!({
        "path": path.display().to_string(),
        "id": info.id,
        "version": info.version,
        "description": info.description,
        "options": info.options.iter().map(|option| json!({
            "name": option.name,
            "type": option_type_name(option.option_type),
            "default": option.default.as_ref().map(option_value_json),
            "help": option.help,
            "env_var": option.env_var,
        })).collect::<Vec<_>>(),
        "recorders": info.recorders.iter().map(|recorder| json!({
            "name": recorder.name,
            "roles": role_names(&recorder.roles),
            "events": recorder.events.iter().map(|k| event_name(*k)).collect::<Vec<_>>(),
            "tick_interval_ms": recorder.tick_interval_ms,
            "request_url": recorder.request_extras.contains(wit::RequestExtras::URL),
            "request_context": recorder.request_extras.contains(wit::RequestExtras::CONTEXT),
        })).collect::<Vec<_>>(),
        "schemas": info.schemas.iter().map(|schema| json!({
            "name": schema.name,
            "schema": serde_json::from_str::<serde_json::Value>(&schema.schema)
                .unwrap_or_else(|_| schema.schema.clone().into()),
        })).collect::<Vec<_>>(),
    })
}

/// JSON text safe on a terminal: serde_json escapes C0 control characters; this escapes the
/// rest (DEL and the C1 range, where a terminal may read an escape sequence). The result is
/// the same JSON value.
fn terminal_safe_json(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c > '\u{1f}' {
                format!("\\u{:04x}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn inspect(path: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut sandbox = Sandbox::new()?;
    if let Ok(cache) = CompileCache::default_dir(&env_var).and_then(|d| CompileCache::open(&d)) {
        sandbox.set_cache(cache);
    }
    let sandbox = Arc::new(sandbox);
    let (info, _) = plugin::load_component(&sandbox, path)?;
    // What a config would say of it: every cap and rule `check`, `replay` and `serve` apply.
    let verdict = plugin::check_plugin_info(&info, path).err();
    let mut described = describe_json(&info, path);
    described["problem"] = verdict.as_ref().map(|e| e.to_string()).into();
    if as_json {
        println!(
            "{}",
            terminal_safe_json(&serde_json::to_string_pretty(&described)?)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!(
        "{} {}\n  {}\n  file: {}\n",
        shown(&info.id),
        shown(&info.version),
        shown(&info.description),
        path.display()
    );
    text.push_str("options:\n");
    if info.options.is_empty() {
        text.push_str("  (none)\n");
    }
    for option in &info.options {
        let default = option
            .default
            .as_ref()
            .map(|d| shown(&option_value_json(d).to_string()))
            .unwrap_or_else(|| "none".into());
        let env = option.env_var.as_deref().map_or("-".to_owned(), |var| {
            format!(
                "{} (read only when a config lists it in env_vars)",
                shown(var)
            )
        });
        text.push_str(&format!(
            "  {}  ({}, default {default}, env {env})\n      {}\n",
            shown(&option.name),
            option_type_name(option.option_type),
            shown(&option.help)
        ));
    }
    text.push_str("recorders:\n");
    for recorder in info.recorders.iter().take(plugin::caps::RECORDERS) {
        let events: Vec<&str> = recorder.events.iter().map(|k| event_name(*k)).collect();
        text.push_str(&format!(
            "  {}\n      roles: {}\n      events: {}\n",
            shown(&recorder.name),
            role_names(&recorder.roles).join(", "),
            events.join(", ")
        ));
        if let Some(ms) = recorder.tick_interval_ms {
            text.push_str(&format!("      tick: every {ms} ms\n"));
        }
    }
    text.push_str("schemas:\n");
    if info.schemas.is_empty() {
        text.push_str("  (none)\n");
    }
    for schema in info.schemas.iter().take(plugin::caps::SCHEMAS) {
        text.push_str(&format!(
            "  {}: {}\n",
            shown(&schema.name),
            capped(
                &schema.schema,
                swarmtel::pipeline::validate::schema_caps::SCHEMA_BYTES
            )
        ));
    }
    if let Some(problem) = &verdict {
        text.push_str(&format!("problem: {problem}\n"));
    }
    print!("{text}");
    Ok(if verdict.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn check(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let sandbox = Arc::new(sandbox_for(&config)?);
    let plugins = pipeline::load_plugins(&sandbox, &config, &env_var)?;
    println!(
        "compile cache: {}",
        sandbox
            .cache()
            .map_or("off".to_owned(), |cache| cache.dir().display().to_string())
    );
    println!(
        "config {}: ok\n  testplan: {}\n  run_id: {}\n  batch size: {}",
        config_path.display(),
        config.run.testplan,
        config
            .run
            .run_id
            .as_deref()
            .unwrap_or("(generated per run)"),
        config.run.batch_size
    );
    for (index, output) in config.outputs.iter().enumerate() {
        let filter = output.filter();
        println!(
            "  outputs[{index}]: {}{}{}",
            output.type_name(),
            match output {
                swarmtel::sinks::config::OutputConfig::JsonLines(settings) =>
                    format!(" {}", shown(&settings.path)),
                swarmtel::sinks::config::OutputConfig::Prometheus(settings) => format!(
                    " http://{}/metrics (linger {} s)",
                    settings.listen, settings.linger_seconds
                ),
                swarmtel::sinks::config::OutputConfig::Otlp(settings) => format!(
                    " {} (metrics every {} ms, logs {}, {:?})",
                    shown(&settings.endpoint),
                    settings.export_interval_ms,
                    if settings.logs { "on" } else { "off" },
                    settings.compression
                ),
            },
            if filter.is_empty() {
                String::new()
            } else {
                format!(
                    " (filter: plugins {:?}, names {:?}, types {:?})",
                    filter.plugins,
                    filter.names,
                    filter.types.iter().map(|t| t.name()).collect::<Vec<_>>()
                )
            }
        );
    }
    println!("  dead letter: {}", shown(&config.dead_letter.path));
    for loaded in &plugins.loaded {
        let roles: Vec<&str> = loaded.roles.iter().map(|r| r.as_str()).collect();
        println!(
            "plugin {} {} ({})\n  roles: {}",
            loaded.id(),
            shown(&loaded.info.version),
            loaded.path.display(),
            roles.join(", ")
        );
        for setting in &loaded.options {
            println!(
                "  option {} = {}",
                setting.name,
                shown(&option_value_json(&setting.value).to_string())
            );
        }
        for option in &loaded.info.options {
            if let Some(var) = &option.env_var {
                let read = loaded.env_vars.contains(var);
                println!(
                    "  env {var} for option {}: {}",
                    option.name,
                    if read {
                        "read (listed in env_vars)"
                    } else {
                        "not read (not listed in env_vars)"
                    }
                );
            }
        }
        let limits = &loaded.limits;
        println!(
            "  limits: cpu {} ms/call, fuel {}/call, memory {} MiB, {} items/call, {} bytes/item, {} bytes/call, {} stdio bytes, {} instances, {} tables of {} elements",
            limits.cpu_ms_per_call,
            limits
                .fuel_per_call
                .map_or("unmetered".to_owned(), |fuel| fuel.to_string()),
            limits.memory_mib,
            limits.max_items_per_call,
            limits.max_item_bytes,
            limits.max_call_bytes,
            limits.stdio_bytes,
            limits.max_instances,
            limits.max_tables,
            limits.max_table_elements,
        );
        println!(
            "  metrics: {} points/call, {} series",
            limits.max_points_per_call, limits.max_metric_series
        );
        println!(
            "  faults: disabled after {} in {} s; restart backoff {} ms doubling to {} ms; {}",
            limits.max_faults,
            limits.fault_window_seconds,
            limits.restart_backoff_ms,
            limits.restart_backoff_max_ms,
            if loaded.required {
                "required: the run fails if it ends disabled"
            } else {
                "not required: the run goes on without it"
            }
        );
        let granted = loaded.capabilities.granted();
        println!(
            "  capabilities: {} (never: files, network, environment, arguments, stdin; stdout/stderr captured)",
            if granted.is_empty() {
                "none granted".to_owned()
            } else {
                format!("granted {}", granted.join(", "))
            }
        );
    }
    if std::io::stdout().is_terminal() && config.plugins.is_empty() {
        println!("(no plugins listed)");
    }
    for (path, error) in &plugins.failed {
        swarmtel::diag!("swarmtel: plugin {} cannot run: {error}", path.display());
    }
    Ok(if plugins.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
