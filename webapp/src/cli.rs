//! Command-line interface (clap derive; no logic here).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The Flypack unit's web app: status, live metrics, history, jobs, over TLS.
///
/// `flypack-web serve` is started by systemd once firstboot's `webapp` stage
/// has made the TLS material. `flypack-web enrol-code` prints a one-time code
/// that creates the first admin at https://UNIT/enrol.
#[derive(Debug, Parser)]
#[command(name = "flypack-web", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the web app (HTTPS, and plain HTTP for the redirect and the CA certificate).
    Serve(ServeArgs),
    /// Make a one-time enrolment code for the first admin and print it.
    EnrolCode(EnrolArgs),
    /// Read a password on stdin and print its argon2id hash (for `initial_admin` in the config).
    HashPassword,
    /// Make sure the TLS material exists and names the unit (what firstboot's webapp stage does); print what was done.
    Tls(RootArgs),
    /// The root helper for the allow-listed actions (the web app's service cannot gain privileges).
    #[command(subcommand)]
    Privileged(PrivilegedCommand),
    /// Manage the unit's web users from outside the web app.
    #[command(subcommand)]
    Users(UsersCommand),
}

/// `flypack-web users ...`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Merge a fleet's web users file into this unit's users (with the web app stopped).
    ///
    /// FILE (TOML) lists the users every unit has, with their role and
    /// argon2id hash (`flypack-web hash-password`), and the users to retire:
    ///
    ///   version = 1
    ///   retire = ["old-laptop"]
    ///   [[users]]
    ///   name = "ana"
    ///   role = "admin"
    ///   password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
    ///
    /// Listed users are added or brought to the file's role and password
    /// (their sessions end); retired users are removed with their sessions;
    /// others are left alone. Refused while the web app runs, and when the
    /// unit would be left with no admin. Prints one line per change, or
    /// "unchanged".
    Apply {
        /// Root and config.
        #[command(flatten)]
        root: RootArgs,
        /// Only say what would change.
        #[arg(long)]
        check: bool,
        /// The fleet's web users file.
        file: PathBuf,
    },
}

/// `flypack-web privileged ...`.
#[derive(Debug, Subcommand)]
pub enum PrivilegedCommand {
    /// Ask the helper to run `FIRSTBOOT ARGS...`; print its output, exit with its code (126: refused).
    ///
    /// The web app's command prefix for its actions. FIRSTBOOT is ignored:
    /// the helper always runs /usr/bin/firstboot, and only the allow-listed
    /// subcommands.
    Call {
        /// The helper's socket.
        #[arg(long, default_value = crate::privileged::SOCKET)]
        socket: PathBuf,
        /// FIRSTBOOT ARGS...
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Ask the helper to run the playbook NAME as root; print its events, copy its artifacts into DIR, exit with its code (126: refused).
    ///
    /// The web app's command for an Ansible job. The helper runs only the
    /// playbooks in its own folder (/usr/share/flypack/ansible/playbooks),
    /// with an input it lays out itself.
    Playbook {
        /// The helper's socket.
        #[arg(long, default_value = crate::privileged::SOCKET)]
        socket: PathBuf,
        /// The playbook's file name (diagnostics.yml).
        name: String,
        /// Copy the run's artifacts (the playbook's downloads) into this folder.
        #[arg(long, value_name = "DIR")]
        files_to: PathBuf,
    },
    /// Serve one request on stdin/stdout (systemd's flypack-web-privileged@.service, as root).
    Serve {
        /// Act on the system under this directory instead of / (tests).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// The firstboot program to run.
        #[arg(long, default_value = crate::privileged::FIRSTBOOT)]
        firstboot: PathBuf,
        /// The ansible-runner program to run.
        #[arg(long, default_value = "/usr/bin/ansible-runner")]
        ansible_runner: PathBuf,
    },
}

/// Where the unit's files are.
#[derive(Debug, Args)]
pub struct RootArgs {
    /// Act on the system under this directory instead of / (tests, images).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,

    /// The web app's config [default: ROOT/etc/flypack/webapp.toml when it exists, else built-in defaults].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `flypack-web serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Root and config.
    #[command(flatten)]
    pub root: RootArgs,
}

/// `flypack-web enrol-code`.
#[derive(Debug, Args)]
pub struct EnrolArgs {
    /// Root and config.
    #[command(flatten)]
    pub root: RootArgs,

    /// Minutes the code stays valid [default: the config's enrol_minutes, 30].
    #[arg(long, value_name = "MINUTES")]
    pub minutes: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_subcommands() {
        let c = Cli::try_parse_from(["flypack-web", "serve", "--root", "/tmp/r", "--config", "/tmp/c.toml"]).unwrap();
        match c.command {
            Command::Serve(a) => {
                assert_eq!(a.root.root, PathBuf::from("/tmp/r"));
                assert_eq!(a.root.config, Some(PathBuf::from("/tmp/c.toml")));
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from(["flypack-web", "enrol-code", "--minutes", "5"]).unwrap();
        match c.command {
            Command::EnrolCode(a) => {
                assert_eq!(a.minutes, Some(5));
                assert_eq!(a.root.root, PathBuf::from("/"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Cli::try_parse_from(["flypack-web", "hash-password"]).unwrap().command,
            Command::HashPassword
        ));
        assert!(Cli::try_parse_from(["flypack-web", "serve", "--bogus"]).is_err());
    }
}
