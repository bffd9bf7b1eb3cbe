/// Element types of stored tensors. Raw values are the safetensors dtype names.
///
/// Floating types are computed on (widened to F32 or F64); the integer and 8-bit float types are
/// carried through unchanged when a checkpoint is rewritten.
public enum DType: String, Sendable, CaseIterable, Codable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case bool = "BOOL", u8 = "U8", i8 = "I8", u16 = "U16", i16 = "I16"
    case u32 = "U32", i32 = "I32", u64 = "U64", i64 = "I64"
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .f64, .u64, .i64: return 8
        case .f32, .u32, .i32: return 4
        case .f16, .bf16, .u16, .i16: return 2
        case .bool, .u8, .i8, .f8e4m3, .f8e5m2: return 1
        }
    }

    /// True for the types this toolkit widens to F32 for computation.
    public var isComputeFloat: Bool {
        switch self {
        case .f64, .f32, .f16, .bf16: return true
        default: return false
        }
    }

    /// The PyTorch dtype name used in config.json `torch_dtype` ("float32", "bfloat16", ...).
    public var torchName: String {
        switch self {
        case .f64: return "float64"
        case .f32: return "float32"
        case .f16: return "float16"
        case .bf16: return "bfloat16"
        case .bool: return "bool"
        case .u8: return "uint8"
        case .i8: return "int8"
        case .u16: return "uint16"
        case .i16: return "int16"
        case .u32: return "uint32"
        case .i32: return "int32"
        case .u64: return "uint64"
        case .i64: return "int64"
        case .f8e4m3: return "float8_e4m3fn"
        case .f8e5m2: return "float8_e5m2"
        }
    }
}
