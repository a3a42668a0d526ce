use clap::Parser;

fn main() {
    let cli = flypack_web::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
    if let Err(e) = flypack_web::cmd::run(cli) {
        eprintln!("flypack-web: error: {e:#}");
        std::process::exit(1);
    }
}
