//! The subcommands.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::{Cli, Command, EnrolArgs, PrivilegedCommand, RootArgs, ServeArgs, UsersCommand};
use crate::config::Config;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(a) => serve(a),
        Command::EnrolCode(a) => enrol_code(a),
        Command::HashPassword => hash_password(),
        Command::Tls(a) => tls(a),
        Command::Users(UsersCommand::Apply { root, check, file }) => users_apply(&root, check, &file),
        Command::Privileged(PrivilegedCommand::Call { socket, argv }) => {
            let code = crate::privileged::call(&socket, &argv)?;
            std::process::exit(code)
        }
        Command::Privileged(PrivilegedCommand::Playbook { socket, name, files_to }) => {
            let code = crate::privileged::playbook(&socket, &name, &files_to)?;
            std::process::exit(code)
        }
        Command::Privileged(PrivilegedCommand::Serve {
            root,
            firstboot,
            ansible_runner,
        }) => crate::privileged::serve(
            &root,
            &crate::privileged::Programs {
                firstboot,
                ansible_runner,
            },
            std::io::stdin().lock(),
            std::io::stdout().lock(),
        ),
    }
}

fn serve(a: ServeArgs) -> Result<()> {
    let cfg = Config::load(&a.root.root, a.root.config.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let running = crate::server::start(&a.root.root, cfg).await?;
        println!(
            "flypack-web: https://{} (plain http: {})",
            running.https,
            running.http.map(|h| h.to_string()).unwrap_or_else(|| "off".into())
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        tokio::select! {
            _ = term.recv() => {},
            r = tokio::signal::ctrl_c() => r.context("listening for Ctrl-C")?,
        }
        tracing::info!("stopping");
        Ok(())
    })
}

fn users_apply(a: &RootArgs, check: bool, file: &std::path::Path) -> Result<()> {
    let cfg = Config::load(&a.root, a.config.as_deref())?;
    let changes = crate::rotate::apply(&a.root, &cfg, file, check)?;
    if changes.is_empty() {
        println!("unchanged");
    }
    for c in &changes {
        println!("{}{c}", if check { "would have " } else { "" });
    }
    Ok(())
}

fn enrol_code(a: EnrolArgs) -> Result<()> {
    let cfg = Config::load(&a.root.root, a.root.config.as_deref())?;
    let minutes = a.minutes.unwrap_or(cfg.login.enrol_minutes);
    let code = crate::enrol::create_code(&a.root.root, Duration::from_secs(u64::from(minutes) * 60))?;
    println!("{code}");
    eprintln!("Enrolment code for the first admin, valid {minutes} minutes: open https://UNIT/enrol and enter it.");
    Ok(())
}

fn hash_password() -> Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let pw = line.trim_end_matches(['\r', '\n']);
    crate::users::check_password(pw)?;
    println!("{}", crate::users::hash_password(pw));
    Ok(())
}

fn tls(a: RootArgs) -> Result<()> {
    let names = match crate::pages::load_unit(&a.root)? {
        Some(u) => crate::tls::unit_names(&u),
        None => crate::tls::UnitNames {
            hostname: crate::state::hostname(&a.root),
            addresses: vec![
                std::net::IpAddr::from([127, 0, 0, 1]),
                std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ],
        },
    };
    let out = crate::tls::ensure_tls(&a.root, &names)?;
    println!("{}", serde_json::to_string_pretty(&out).context("serialising")?);
    Ok(())
}
