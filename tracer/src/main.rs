fn main() {
    std::process::exit(tracer::core::cli::main());
}
