fn main() {
    if let Err(err) = nodeforge::cli::run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
