fn main() {
    eprintln!("fuse-overlay {}: not implemented yet", rpod_storage::VERSION);
    std::process::exit(1);
}
