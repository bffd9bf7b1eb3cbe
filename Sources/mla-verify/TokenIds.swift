import ArgumentParser
import Foundation
import MLACheckpoint
import MLACLI

/// The indices of a comma-separated `option` list (`--ids`, `--layers`), each in 0..<`limit` (an empty
/// piece is refused too): "--ids: '' is not a token id below 49152".
func parseIndexList(_ list: String, option: String, what: String, below limit: Int) throws -> [Int] {
    try list.split(separator: ",", omittingEmptySubsequences: false).map { piece -> Int in
        guard let v = Int(piece.trimmingCharacters(in: .whitespacesAndNewlines)), (0..<limit).contains(v) else {
            throw ValidationError("\(option): '\(piece)' is not \(what) below \(limit)")
        }
        return v
    }
}

/// Refuses fewer than 2 tokens: a window predicts the tokens after its first.
func requireTwoTokens(_ ids: [Int]) throws {
    guard ids.count >= 2 else { throw ValidationError("need at least 2 tokens, the input has \(ids.count)") }
}

/// Says on standard error when a run feeds `checkpoint` more than its trained context
/// (`max_position_embeddings`) in one sequence of `positions` tokens: the positions past it are
/// extrapolation, where the model's numbers say little about it or its conversion.
func noteBeyondContext(_ positions: Int, of checkpoint: Checkpoint, what: String) {
    let context = checkpoint.config.maxPositions
    guard positions > context else { return }
    writeStandardError("note: \(what) of \(positions) tokens is beyond \(checkpoint.path)'s context of \(context) positions (max_position_embeddings); the positions past it are extrapolation\n")
}
