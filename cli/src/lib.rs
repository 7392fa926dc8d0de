//! `rpod`: the daemonless engine. Every command is a short process over the store (and,
//! later, the helpers). `main.rs` only calls [`main_exit`].
//!
//! Errors are printed as `Error: <message>` on stderr and exit with 125, podman's code for
//! an engine error; a command that needs another code returns [`Exit`].

pub mod commands;
pub mod engine;
pub mod format;
pub mod reference;
pub mod rootless;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use commands::{container, image, images, load, network, pod, pull, rmi, save, system, tag, version};

/// Podman's exit code for an error of the engine itself.
pub const EXIT_ERROR: i32 = 125;

/// An error carrying its own exit code (the message is printed as `Error: ...` unless empty).
#[derive(Debug)]
pub struct Exit {
    /// The process exit code.
    pub code: i32,
    /// The message; empty when the command already reported.
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Returns an [`Exit`] error.
pub fn exit_with(code: i32, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Exit { code, message: message.into() })
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "rpod",
    version,
    about = "Manage pods, containers and images (daemonless)",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Path to the root directory in which data, including images, is stored
    #[arg(long, global = true, value_name = "PATH")]
    pub root: Option<PathBuf>,
    /// Log messages at and above specified level: trace, debug, info, warn, error, fatal or panic
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,
    /// Path to the OCI-compatible binary used to run containers
    #[arg(long, global = true, env = "RPOD_RUNTIME", value_name = "PATH")]
    pub runtime: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage images
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// List images in local storage
    #[command(visible_alias = "list")]
    Images(images::ImagesArgs),
    /// Load image(s) from a tar archive or an OCI layout directory
    Load(load::LoadArgs),
    /// Save image(s) to an archive
    Save(save::SaveArgs),
    /// Remove one or more images from local storage
    Rmi(rmi::RmiArgs),
    /// Add an additional name to a local image
    Tag(tag::TagArgs),
    /// Pull an image from a registry
    Pull(pull::PullArgs),
    /// Log in to a container registry
    Login(pull::LoginArgs),
    /// Log out of a container registry
    Logout(pull::LogoutArgs),
    /// Display the rpod version information
    Version(version::VersionArgs),
    /// Run a command in a new container
    Run(container::RunArgs),
    /// Create but do not start a container
    Create(container::CreateOnlyArgs),
    /// Start one or more containers
    Start(container::NamesArgs),
    /// Stop one or more containers
    Stop(container::StopArgs),
    /// Remove one or more containers
    Rm(container::RmArgs),
    /// Kill one or more running containers with a specific signal
    Kill(container::KillArgs),
    /// Restart one or more containers
    Restart(container::StopArgs),
    /// Run a process in a running container
    Exec(container::ExecArgs),
    /// Attach to a running container
    Attach(container::AttachArgs),
    /// List containers
    Ps(container::PsArgs),
    /// Fetch the logs of one or more containers
    Logs(container::LogsArgs),
    /// Display the configuration of containers (or images)
    Inspect(container::InspectArgs),
    /// Block on one or more containers
    Wait(container::NamesArgs),
    /// List port mappings or a specific mapping for the container
    Port(container::PortArgs),
    /// Manage networks
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage pods
    #[command(subcommand)]
    Pod(pod::PodCommand),
    /// Display rpod system information
    Info(system::InfoArgs),
    /// Manage rpod
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Run a command in a modified user namespace (rootless)
    Unshare(system::UnshareArgs),
    /// The per-container monitor (internal)
    #[command(name = "__monitor", hide = true)]
    Monitor(container::MonitorArgs),
    /// The rootless pause process (internal)
    #[command(name = "__pause", hide = true)]
    Pause(PauseArgs),
}

/// `rpod __pause` arguments.
#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// Stay in the caller's namespaces (they are already the user's)
    #[arg(long)]
    pub no_unshare: bool,
}

impl Cli {
    /// The store root: `--root`, else the default for this user (rootless:
    /// `$XDG_DATA_HOME/rpod/storage` or `~/.local/share/rpod/storage`).
    pub fn root(&self) -> PathBuf {
        if let Some(r) = &self.root {
            return r.clone();
        }
        if rootless::is_rootless() {
            return rpod_storage::store::default_user_root(
                std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
                std::env::var_os("HOME").map(PathBuf::from),
            );
        }
        rpod_storage::default_root()
    }

    /// Opens the store (rootless: private to the user, user xattrs for overlay).
    pub fn store(&self) -> anyhow::Result<rpod_storage::Store> {
        let root = self.root();
        tracing::debug!(root = %root.display(), "opening store");
        if rootless::is_rootless() {
            let store = rpod_storage::Store::open_with(&root, true)?;
            rootless::make_private(store.root());
            return Ok(store);
        }
        Ok(rpod_storage::Store::open(&root)?)
    }
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        other => {
            return Err(anyhow::anyhow!(
                "log level {other:?} is not supported, choose from: trace, debug, info, warn, error, fatal, panic"
            ))
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        .try_init();
    Ok(())
}

/// Runs a parsed command line.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    init_logging(&cli.log_level)?;
    match &cli.command {
        Command::Image(c) => image::run(cli, c),
        Command::Images(a) => images::run(cli, a),
        Command::Load(a) => load::run(cli, a),
        Command::Save(a) => save::run(cli, a),
        Command::Rmi(a) => rmi::run(cli, a),
        Command::Tag(a) => tag::run(cli, a),
        Command::Pull(a) => pull::pull(cli, a),
        Command::Login(a) => pull::login(cli, a),
        Command::Logout(a) => pull::logout(cli, a),
        Command::Version(a) => version::run(a),
        Command::Run(a) => container::run(cli, a),
        Command::Create(a) => container::create(cli, a),
        Command::Start(a) => container::start(cli, a),
        Command::Stop(a) => container::stop(cli, a),
        Command::Rm(a) => container::rm(cli, a),
        Command::Kill(a) => container::kill(cli, a),
        Command::Restart(a) => container::restart(cli, a),
        Command::Exec(a) => container::exec(cli, a),
        Command::Attach(a) => container::attach(cli, a),
        Command::Ps(a) => container::ps(cli, a),
        Command::Logs(a) => container::logs(cli, a),
        Command::Inspect(a) => container::inspect(cli, a),
        Command::Wait(a) => container::wait(cli, a),
        Command::Port(a) => container::port(cli, a),
        Command::Network(c) => network::run(cli, c),
        Command::Pod(c) => pod::run(cli, c),
        Command::Info(a) => system::run_info(cli, a),
        Command::System(c) => system::run(cli, c),
        Command::Unshare(a) => system::unshare(cli, a),
        Command::Monitor(a) => container::monitor(cli, a),
        Command::Pause(a) => rootless::pause_main(!a.no_unshare),
    }
}

/// Parses the process arguments, runs, reports any error, and returns the exit code.
pub fn main_exit() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match &cli.command {
        Command::Pause(a) => rootless::pause_main(!a.no_unshare),
        Command::Version(_) => {}
        _ => {
            if let Err(e) = init_logging(&cli.log_level) {
                return report(&e);
            }
            // First, while the process is single-threaded: a non-root user joins (creating)
            // the user's namespaces.
            if let Err(e) = rootless::init() {
                return report(&e.context("rootless mode"));
            }
        }
    }
    match run(&cli) {
        Ok(()) => 0,
        Err(e) => report(&e),
    }
}

/// Prints an error as podman does and returns its exit code.
pub fn report(e: &anyhow::Error) -> i32 {
    if let Some(x) = e.downcast_ref::<Exit>() {
        if !x.message.is_empty() {
            eprintln!("Error: {}", printable(&x.message));
        }
        return x.code;
    }
    eprintln!("Error: {}", printable(&format!("{e:#}")));
    EXIT_ERROR
}

/// Escapes control characters (an error may quote bytes of a corrupt input).
fn printable(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}
