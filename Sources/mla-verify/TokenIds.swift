import ArgumentParser
import Foundation
import MLACheckpoint
import MLACLI

/// Token ids from a comma-separated `--ids` list, each checked against the vocabulary (an empty piece too).
func parseTokenIds(_ list: String, vocabSize: Int) throws -> [Int] {
    try list.split(separator: ",", omittingEmptySubsequences: false).map { piece -> Int in
        guard let v = Int(piece.trimmingCharacters(in: .whitespacesAndNewlines)), v >= 0, v < vocabSize else {
            throw ValidationError("--ids: '\(piece)' is not a token id below \(vocabSize)")
        }
        return v
    }
}

/// Says on standard error when a run feeds `checkpoint` more than its trained context
/// (`max_position_embeddings`) in one sequence of `positions` tokens: the positions past it are
/// extrapolation, where the model's numbers say little about it or its conversion.
func noteBeyondContext(_ positions: Int, of checkpoint: Checkpoint, what: String) {
    let context = checkpoint.config.maxPositions
    guard positions > context else { return }
    writeStandardError("note: \(what) of \(positions) tokens is beyond \(checkpoint.path)'s context of \(context) positions (max_position_embeddings); the positions past it are extrapolation\n")
}
