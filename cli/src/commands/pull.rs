//! `rpod pull`, `rpod login`, `rpod logout` over the store's registry client
//! (`rpod_storage::registry`), with podman's flags.

use std::path::PathBuf;

use clap::Args;

use rpod_storage::registry;

use crate::{exit_with, Cli, EXIT_ERROR};

/// `rpod pull` arguments.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Require HTTPS and verify certificates when contacting registries
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: bool,
    /// Credentials (USERNAME:PASSWORD) to use for authenticating to a registry
    #[arg(long, value_name = "USERNAME[:PASSWORD]")]
    pub creds: Option<String>,
    /// Path of the authentication file (podman's auth.json format)
    #[arg(long, value_name = "PATH")]
    pub authfile: Option<PathBuf>,
    /// Suppress the progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Use ARCH instead of the host's architecture for an image index
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// Use VARIANT instead of the host's architecture variant for an image index
    #[arg(long, value_name = "VARIANT")]
    pub variant: Option<String>,
    /// The image to pull
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

/// `rpod login` arguments.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username for the registry
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password for the registry
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// Require HTTPS and verify certificates when contacting registries
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: bool,
    /// Path of the authentication file (podman's auth.json format)
    #[arg(long, value_name = "PATH")]
    pub authfile: Option<PathBuf>,
    /// The registry
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
}

/// `rpod logout` arguments.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Remove the credentials of all registries
    #[arg(short, long)]
    pub all: bool,
    /// Path of the authentication file (podman's auth.json format)
    #[arg(long, value_name = "PATH")]
    pub authfile: Option<PathBuf>,
    /// The registry
    #[arg(value_name = "REGISTRY", required_unless_present = "all")]
    pub registry: Option<String>,
}

/// Runs `rpod pull`: prints the image ID on stdout, as podman does.
pub fn pull(cli: &Cli, a: &PullArgs) -> anyhow::Result<()> {
    crate::reference::parse(&a.image)?;
    let store = cli.store()?;
    let credentials = match a.creds.as_deref() {
        None => None,
        Some(c) => Some(
            registry::Credentials::parse(c)
                .ok_or_else(|| exit_with(EXIT_ERROR, "--creds must be USERNAME:PASSWORD".to_string()))?,
        ),
    };
    let opts = registry::PullOptions {
        tls_verify: a.tls_verify,
        credentials,
        auth_file: a.authfile.clone(),
        progress: !a.quiet,
        arch: a.arch.clone(),
        variant: a.variant.clone(),
        ..Default::default()
    };
    let id = registry::pull(&store, &a.image, &opts)?;
    println!("{id}");
    Ok(())
}

/// Runs `rpod login`: the password from `-p`, from stdin with `--password-stdin`.
pub fn login(_cli: &Cli, a: &LoginArgs) -> anyhow::Result<()> {
    let user =
        a.username.clone().ok_or_else(|| exit_with(EXIT_ERROR, "rpod login: --username is required".to_string()))?;
    let password = match (&a.password, a.password_stdin) {
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_line(&mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (Some(_), true) => {
            return Err(exit_with(EXIT_ERROR, "rpod login: use -p or --password-stdin, not both".to_string()))
        }
        (None, false) => {
            return Err(exit_with(
                EXIT_ERROR,
                "rpod login: a password is required (-p or --password-stdin)".to_string(),
            ))
        }
    };
    let opts = registry::LoginOptions { tls_verify: a.tls_verify, auth_file: a.authfile.clone() };
    registry::login(&a.registry, &user, &password, &opts)?;
    println!("Login Succeeded!");
    Ok(())
}

/// Runs `rpod logout`.
pub fn logout(_cli: &Cli, a: &LogoutArgs) -> anyhow::Result<()> {
    let registry = if a.all { None } else { a.registry.as_deref() };
    let n = registry::logout(registry, a.authfile.as_deref())?;
    match registry {
        Some(r) if n > 0 => println!("Removed login credentials for {r}"),
        Some(r) => return Err(exit_with(EXIT_ERROR, format!("not logged into {r}"))),
        None => println!("Removed login credentials for all registries"),
    }
    Ok(())
}
