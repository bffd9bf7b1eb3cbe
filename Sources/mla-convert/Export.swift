import ArgumentParser
import MLACheckpoint
import MLARuntime
import MLATensor
import MLACLI

extension MLAConvertCommand {
    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rewrite a checkpoint in another format (e.g. a GGUF as a Hugging Face safetensors directory).",
            discussion: """
            Quantized GGUF tensors are dequantized to F32 and llama Q/K rows are restored to the Hugging Face \
            rotate-half layout. From a GGUF source, tokenizer.json and tokenizer_config.json are built from the \
            embedded tokenizer so the output is a complete Hugging Face model directory.
            """)

        @Argument(help: "The checkpoint to read.")
        var model: String

        @Option(name: .shortAndLong, help: "Output directory (hf) or file (hdf5).")
        var output: String

        @Option(help: "Output format: hf or hdf5.")
        var format = OutputFormat.hf

        @Option(help: "Store floating-point tensors as f32, bf16 or f16 (default: as stored; quantized -> f32).")
        var dtype: DType?

        @Option(help: ArgumentHelp("Largest safetensors shard, e.g. 500MB (hf only; default 5GB).", valueName: ByteSize.valueName))
        var maxShardSize: ByteSize?

        @Option(help: "Deflate level 1-9 (hdf5 only; default: uncompressed, memory-mappable).")
        var deflate: Int?

        @Flag(help: "Replace a previous output of mla-convert at the output path (nothing else is ever replaced).")
        var force = false

        func validate() throws {
            if let deflate, !(1...9).contains(deflate) { throw ValidationError("--deflate must be 1-9") }
            if deflate != nil, format != .hdf5 { throw ValidationError("--deflate compresses HDF5 datasets; it needs --format hdf5") }
            if format != .hf { try refuseShardSize(maxShardSize, oneFileFormat: format.rawValue) }
        }

        func run() throws {
            let writer = CheckpointWriter(format: format, maxShardBytes: (maxShardSize ?? ByteSize.defaultShard).bytes, deflateLevel: deflate)
            let plan = try writer.output(output, force: force, inputs: [model])
            let checkpoint = try Checkpoint.openPrintingWarnings(model)
            let eps = MLALayerReader.latentNormEps(checkpoint)
            if checkpoint.config.family == .deepseekV3, eps != MLALayerReader.hfLatentNormEps {
                // The tensors and config.json would carry over, but the latent norms' epsilon would not.
                throw CheckpointError.unsupportedModel(file: model, reason: "this deepseek2 GGUF normalizes its latents with its one epsilon (\(eps)), and a DeepSeek-V3 checkpoint's latent norms use \(MLALayerReader.hfLatentNormEps), so the export would change the model; convert the source model again with --format deepseek (docs/gguf-export.md)")
            }
            let store = checkpoint.store
            let entries = try store.names.map { name -> TensorWriteEntry in
                guard let info = store.info(name) else { throw CheckpointError.missingTensor(file: model, tensor: name) }
                let dt = info.dtype.isComputeFloat ? (dtype ?? info.dtype) : info.dtype
                return TensorWriteEntry(name: name, dtype: dt, shape: info.shape)
            }
            var config = checkpoint.config.raw
            if let dtype { config = config.setting("torch_dtype", .string(dtype.torchName)) }
            let aux = try BPETokenizer.sideFiles(for: checkpoint)
            let progress = Progress(total: entries.count, label: "export")
            let byName = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0) })
            try writer.write(to: plan, config: config, entries: entries,
                             metadata: ["source": model, "written_by": "mla-convert \(ToolkitVersion.string)"],
                             auxiliaryFiles: aux) { name in
                progress.step()
                let t = try checkpoint.checkedTensor(name)
                guard let entry = byName[name] else { return t }
                return t.dtype == entry.dtype ? t : t.converted(to: entry.dtype)
            }
            progress.finish()
            print("wrote \(output) (\(format.rawValue), \(entries.count) tensors)")
        }
    }
}
