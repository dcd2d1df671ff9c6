fn main() {
    std::process::exit(tracer::main());
}
