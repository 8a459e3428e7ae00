fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/agent.proto");
    println!("cargo:rerun-if-changed=proto/health.proto");
    tonic_prost_build::configure().compile_protos(&["proto/agent.proto"], &["proto"])?;
    // grpc probes: the client, and the server the tests answer them with
    tonic_prost_build::configure().compile_protos(&["proto/health.proto"], &["proto"])?;
    Ok(())
}
