use clap::Parser;

fn main() {
    let cli = caretaker::cli::Cli::parse();
    match caretaker::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
