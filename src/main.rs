//! `proxyha`: the command line. Parses arguments, sets up logging, and hands over to the
//! supervisor (`run`) or to a one-shot command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use proxyha::config::{self, Config};
use proxyha::status::{self, Request, Response};

#[derive(Parser)]
#[command(
    name = "proxyha",
    version = proxyha::update::VERSION,
    about = "Proxy HA: VRRP failover and load sharing for web proxies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the supervisor in the foreground (SIGTERM/SIGINT: leave the group cleanly)
    Run {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Show this node's view of the cluster
    Status {
        /// Print the status document as JSON
        #[arg(long)]
        json: bool,
        /// Control socket of the supervisor [default: control.socket of the default config,
        /// else /run/proxyha/control.sock]
        #[arg(long)]
        control: Option<PathBuf>,
        /// Say which node this client address is pinned to (or would go to), and why
        #[arg(long, value_name = "IP")]
        client: Option<std::net::Ipv4Addr>,
    },
    /// Check that every redirected port listens on the wildcard address (exit 0 if so, 1 if not)
    Check {
        /// One line per port, with the bound addresses and the owning process
        #[arg(short, long)]
        verbose: bool,
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Maintenance: no new clients for this node, pinned clients finish (kept across restarts)
    Drain {
        /// Control socket of the supervisor [default: as for status]
        #[arg(long)]
        control: Option<PathBuf>,
    },
    /// End maintenance: new clients come to this node again
    Undrain {
        /// Control socket of the supervisor [default: as for status]
        #[arg(long)]
        control: Option<PathBuf>,
    },
    /// Make the supervisor re-read its configuration file (as SIGHUP does)
    Reload {
        /// Control socket of the supervisor [default: as for status]
        #[arg(long)]
        control: Option<PathBuf>,
    },
    /// Configuration tools
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Ask for the essentials on the console (address, gateway, VIP, priority, port
    /// redirects), write the config atomically and offer to reboot to apply it
    Setup {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// A/B updates: verify and install a signed bundle, show and mark the slots
    Update {
        #[command(subcommand)]
        command: UpdateCommand,
    },
    /// Print the version
    Version,
}

#[derive(Subcommand)]
enum UpdateCommand {
    /// Check a bundle (signature, board, every image's size and SHA-256); exit 0 valid, 1 not
    Verify {
        /// The bundle, or - for standard input
        file: PathBuf,
        /// Directory of trusted minisign public keys (*.pub) [default: the running slot's,
        /// /usr/share/proxyha/keys]
        #[arg(long, value_name = "DIR")]
        keys: Option<PathBuf>,
    },
    /// Install a bundle into the inactive slot; it boots next as a trial
    Install {
        /// The bundle, or - for standard input (curl -s URL | proxyha update install -)
        file: PathBuf,
        /// Reboot into the new version once it is installed
        #[arg(long)]
        reboot: bool,
        /// Install a version that is not newer than the running one
        #[arg(long)]
        allow_downgrade: bool,
        /// Install a version that failed its health check here before
        #[arg(long)]
        force: bool,
        /// Trusted keys instead of the running slot's keyring
        #[arg(long, value_name = "DIR")]
        keys: Option<PathBuf>,
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Booted slot, each slot's version and state, what boots next, the last failure
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Commit the booted slot now (as a healthy trial boot does by itself)
    MarkGood,
    /// Give the booted slot up: the other slot boots next
    MarkBad,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file; exit 0 if valid, 1 if not
    Check { path: PathBuf },
    /// Print a commented example configuration
    Example,
    /// Print one validated value for scripts (empty when unset); exit 1 if the file is invalid
    Get {
        key: String,
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Status {
            json,
            control,
            client,
        } => status(json, control, client),
        Command::Check { verbose, config } => check(&config, verbose),
        Command::Drain { control } => command(control, Request::Drain),
        Command::Undrain { control } => command(control, Request::Undrain),
        Command::Reload { control } => command(control, Request::Reload),
        Command::Config {
            command: ConfigCommand::Check { path },
        } => match Config::load(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{}", config::example());
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Get { key, config },
        } => config_get(&key, &config),
        Command::Setup { config } => proxyha_setup(&config),
        Command::Update { command } => update(command),
        Command::Version => {
            println!("proxyha {}", proxyha::update::VERSION);
            ExitCode::SUCCESS
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // The blocking pool's threads would inherit the VRRP loop's real-time policy.
        .on_thread_start(proxyha::daemon::normal_scheduling)
        .build()
}

fn run(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = proxyha::logging::init(&config.log.target, config.log.level) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let shutdown = shutdown_signal()?;
        proxyha::daemon::run(config, Some(path.to_path_buf()), shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("proxyha: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on the first SIGTERM or SIGINT. Handlers are installed before returning,
/// so a signal that arrives during start-up is not lost.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, proxyha::daemon::DaemonError>
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// `--control`, else `control.socket` of the default config, else the default socket.
fn control_socket(control: Option<PathBuf>) -> PathBuf {
    control.unwrap_or_else(|| {
        Config::load(Path::new(config::DEFAULT_PATH))
            .map(|c| c.control.socket)
            .unwrap_or_else(|_| PathBuf::from(config::DEFAULT_SOCKET))
    })
}

/// `proxyha check`: 0 all ports fine, 1 a port needs attention (or /proc unreadable),
/// 2 the config cannot be read.
fn check(path: &Path, verbose: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match proxyha::check::run(&config, verbose) {
        Ok((text, ok)) => {
            print!("{text}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("proxyha: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A control request whose answer is one confirmation line: drain, undrain, reload.
fn command(control: Option<PathBuf>, request: Request) -> ExitCode {
    let socket = control_socket(control);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(status::request(&socket, &request)) {
        Ok(Response::Ok(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Response::Error(e)) => {
            eprintln!("proxyha: {e}");
            ExitCode::FAILURE
        }
        Ok(Response::Status(_) | Response::Client(_)) => {
            eprintln!(
                "proxyha: {} answered with a status, not a confirmation; are proxyha and proxyha run the same version?",
                socket.display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("proxyha: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a status answer as pretty JSON or as the table `render` makes.
fn print_status<T: serde::Serialize>(json: bool, doc: &T, render: fn(&T) -> String) -> ExitCode {
    if !json {
        print!("{}", render(doc));
        return ExitCode::SUCCESS;
    }
    match serde_json::to_string_pretty(doc) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("encoding the status as JSON: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(json: bool, control: Option<PathBuf>, client: Option<std::net::Ipv4Addr>) -> ExitCode {
    let socket = control_socket(control);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let request = match client {
        Some(ip) => Request::Client { ip },
        None => Request::Status,
    };
    match rt.block_on(status::request(&socket, &request)) {
        Ok(Response::Client(c)) => print_status(json, &c, status::render_client),
        Ok(Response::Status(s)) => print_status(json, &*s, status::render_table),
        Ok(Response::Ok(text)) => {
            eprintln!(
                "proxyha: {} answered {text:?} instead of a status; are proxyha and proxyha run the same version?",
                socket.display()
            );
            ExitCode::FAILURE
        }
        Ok(Response::Error(e)) => {
            eprintln!("proxyha: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("proxyha: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `proxyha update …`. The log lines go to the configured log target (syslog on the
/// appliance) so /var/log/messages holds every step; stdout gets them too.
fn update(command: UpdateCommand) -> ExitCode {
    use proxyha::update::command as cmd;
    let quiet_log = |config: &Config| {
        if config.log.target == config::LogTarget::Syslog {
            let _ = proxyha::logging::init(&config.log.target, config.log.level);
        }
    };
    let code = match command {
        UpdateCommand::Verify { file, keys } => cmd::verify(&file, keys.as_deref()),
        UpdateCommand::Install {
            file,
            reboot,
            allow_downgrade,
            force,
            keys,
            config,
        } => {
            // A broken config must not keep a fixed release out: defaults then, said so.
            let c = match Config::load(&config) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!(
                        "proxyha: {e}; installing with the default state_dir and health timeout"
                    );
                    None
                }
            };
            if let Some(c) = &c {
                quiet_log(c);
            }
            cmd::install(&cmd::InstallArgs {
                file,
                keys,
                allow_downgrade,
                force,
                reboot,
                state_dir: c.as_ref().map_or_else(
                    || PathBuf::from(config::DEFAULT_STATE_DIR),
                    |c| c.control.state_dir.clone(),
                ),
                timeout_s: c.as_ref().map_or(config::DEFAULT_HEALTH_TIMEOUT_S, |c| {
                    c.update.health_timeout_s
                }),
            })
        }
        UpdateCommand::Status { json, config } => {
            let c = Config::load(&config).ok();
            let state_dir = c.as_ref().map_or_else(
                || PathBuf::from(config::DEFAULT_STATE_DIR),
                |c| c.control.state_dir.clone(),
            );
            let socket = c.map_or_else(
                || PathBuf::from(config::DEFAULT_SOCKET),
                |c| c.control.socket,
            );
            // During a trial, the supervisor says what is still missing.
            let missing = runtime().ok().and_then(|rt| {
                match rt.block_on(status::request(&socket, &Request::Status)) {
                    Ok(Response::Status(s)) => s.update_missing,
                    _ => None,
                }
            });
            match cmd::status_doc(&state_dir, missing) {
                Ok(doc) => {
                    return print_status(json, &doc, proxyha::update::report::render);
                }
                Err(e) => {
                    eprintln!("proxyha: {e}");
                    2
                }
            }
        }
        UpdateCommand::MarkGood => cmd::mark(true),
        UpdateCommand::MarkBad => cmd::mark(false),
    };
    ExitCode::from(code)
}

fn config_get(key: &str, path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match config.get(key) {
        Some(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "proxyha: config get: unknown key {key}; keys: {}",
                config::GET_KEYS.join(", ")
            );
            ExitCode::from(2)
        }
    }
}

/// A fresh group key: 24 bytes from the kernel's CSPRNG, as 48 hex digits.
fn random_key() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The console shell around `setup::Dialogue`: prompts on stdout, errors on stdout too (the
/// operator reads one stream), lines from stdin. End of input before the last answer writes
/// nothing (exit 1).
fn proxyha_setup(path: &Path) -> ExitCode {
    use std::io::{BufRead, Write};
    let base = match Config::load(path) {
        Ok(c) => Some(c),
        Err(config::ConfigError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            None
        }
        Err(e) => {
            println!("the current config is not valid, starting from scratch:\n{e}");
            None
        }
    };
    let key_path = base
        .as_ref()
        .and_then(|c| c.ha.auth_key_file.clone())
        .unwrap_or_else(|| {
            path.parent()
                .unwrap_or(Path::new("/etc/proxyha"))
                .join("auth.key")
        });
    let generated = match random_key() {
        Ok(k) => k,
        Err(e) => {
            println!("setup: reading /dev/urandom for a group key: {e}; nothing written");
            return ExitCode::FAILURE;
        }
    };
    let keys = proxyha::setup::KeySetup {
        path: key_path.clone(),
        generated,
    };
    let mut dialogue = proxyha::setup::Dialogue::new(base, keys);
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut out = std::io::stdout();
    println!("ProxyHA setup: Enter keeps the value in brackets.");
    while let Some(prompt) = dialogue.prompt() {
        print!("{prompt}");
        let _ = out.flush();
        let Some(Ok(line)) = lines.next() else {
            println!("\nsetup: input ended; nothing written");
            return ExitCode::FAILURE;
        };
        if let Err(e) = dialogue.answer(&line) {
            println!("  {e}");
        }
    }
    let text = match dialogue.finished() {
        Some(Ok(text)) => text,
        Some(Err(e)) => {
            println!("setup: the result is not valid, nothing written:\n{e}");
            return ExitCode::FAILURE;
        }
        None => return ExitCode::FAILURE,
    };
    if let Some(key) = dialogue.key() {
        // The key first: a config that names a missing key file would not start.
        if let Err(e) =
            proxyha::daemon::write_atomic_mode(&key_path, format!("{key}\n").as_bytes(), 0o600)
        {
            println!(
                "setup: writing the group key {}: {}; nothing changed",
                key_path.display(),
                config::io_reason(&e)
            );
            return ExitCode::FAILURE;
        }
        println!(
            "wrote the group key to {} (mode 0600); give it to the other nodes' setup: {key}",
            key_path.display()
        );
    } else {
        println!(
            "no group key: membership is unauthenticated, any host on the segment can join the pool"
        );
    }
    if let Err(e) = proxyha::daemon::write_atomic(path, text.as_bytes()) {
        println!(
            "setup: writing {}: {}; nothing changed",
            path.display(),
            config::io_reason(&e)
        );
        return ExitCode::FAILURE;
    }
    println!("wrote {}", path.display());
    print!("Reboot now to apply? [y/N]: ");
    let _ = out.flush();
    match lines.next() {
        Some(Ok(answer)) if answer.trim().eq_ignore_ascii_case("y") => {
            println!("rebooting");
            match std::process::Command::new("reboot").status() {
                Ok(s) if s.success() => ExitCode::SUCCESS,
                _ => {
                    println!("setup: reboot failed; reboot by hand to apply");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            println!("not rebooting; the new config applies at the next reboot");
            ExitCode::SUCCESS
        }
    }
}
