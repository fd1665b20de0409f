fn main() -> std::process::ExitCode {
    nordlys::cli::main()
}
