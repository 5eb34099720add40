use clap::Parser;

fn main() {
    let cli = caretaker::cli::Cli::parse();
    quiet_on_closed_pipe(&cli.command);
    match caretaker::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Rust ignores SIGPIPE, so `println!` to a closed pipe (`caretaker check ... | head -1`) panicked with "failed
/// printing to stdout: Broken pipe". The commands restore the default action and end quietly like other Unix
/// tools. Not the daemon: `run` must outlive a restarted log reader (journald), and sockets (MQTT, HTTP) never
/// raise SIGPIPE here (the standard library sends with MSG_NOSIGNAL).
fn quiet_on_closed_pipe(command: &caretaker::cli::Command) {
    #[cfg(unix)]
    if !matches!(command, caretaker::cli::Command::Run { .. }) {
        // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid action.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    #[cfg(not(unix))]
    let _ = command;
}
