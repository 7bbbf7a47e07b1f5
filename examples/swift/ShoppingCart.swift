// The paper's shopping cart (Dynamo, SOSP 2007, section 4.4) with the DynamoKV Swift SDK: two
// sessions add items to one cart at the same time, from the same stale version, one of them
// while a node is down; the union resolver merges the branches and nothing added is lost.
//
// Run it against `make run`'s cluster from an executable target that depends on the DynamoKV
// package (bindings-swift/Package.swift), e.g. `swift run ShoppingCart`, with
//
//     DYNAMOKV_SEEDS=127.0.0.1:7070,127.0.0.1:7071,127.0.0.1:7072
//
// (default 127.0.0.1:7070). The example never stops a node itself: set DYNAMOKV_DOWN_PID to
// the pid of one node (`make run` prints them) and it pauses that process (SIGSTOP) for the
// second session's add and resumes it (SIGCONT) afterwards. It prints each step and exits with
// status 1 if an added item went missing.

import DynamoKV
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

enum CartError: Error, CustomStringConvertible {
    case lost([String], in: [String])
    case notConverged(versions: Int)

    var description: String {
        switch self {
        case .lost(let missing, let cart):
            return "items \(missing) were lost: the cart holds \(cart)"
        case .notConverged(let versions):
            return "the cart still has \(versions) versions after the write-back"
        }
    }
}

/// A cart is a JSON array of item names (what the built-in `unionJson` resolver merges).
func encode(_ items: [String]) throws -> Data {
    try JSONEncoder().encode(items)
}

func decode(_ value: Data?) throws -> [String] {
    guard let value = value else { return [] }
    return try JSONDecoder().decode([String].self, from: value)
}

/// One shopping session: reads nothing new, adds `item` to the cart version it saw.
func addItem(
    _ item: String, to key: String, seen: [String], context: DynamoKVContext,
    session: String, client: DynamoKvClient
) async throws {
    let cart = seen + [item]
    try await client.put(key, try encode(cart), context: context)
    print("\(session): added \(item) to the cart it had read: \(cart)")
}

/// Pauses the node with pid `pid` (SIGSTOP) while `body` runs, then resumes it (SIGCONT).
func withNodeDown<T>(_ pid: pid_t?, _ body: () async throws -> T) async rethrows -> T {
    guard let pid = pid else {
        return try await body()
    }
    kill(pid, SIGSTOP)
    print("paused node pid \(pid) (SIGSTOP)")
    defer {
        kill(pid, SIGCONT)
        print("resumed node pid \(pid) (SIGCONT)")
    }
    return try await body()
}

func shoppingCart() async throws {
    let env = ProcessInfo.processInfo.environment
    let seeds = (env["DYNAMOKV_SEEDS"] ?? "127.0.0.1:7070")
        .split(separator: ",").map { String($0) }
    let downPid = env["DYNAMOKV_DOWN_PID"].flatMap { pid_t($0) }
    // A node that does not answer within 3 s is routed around (above a node's 2 s replica
    // timeout plus half a second, so a coordinating node can still answer).
    let client = try DynamoKvClient(
        seeds: seeds, options: ClientOptions(requestTimeoutMs: 20_000, attemptTimeoutMs: 3_000))
    try await client.connect()
    let info = try await client.clusterInfo()
    print(
        "connected via \(info.answeredBy): \(info.members.count) node(s), N = \(info.n), "
            + "R = \(info.r), W = \(info.w), ring version \(info.ringVersion)")

    let key = "cart:\(UUID().uuidString)"
    try await client.put(key, try encode(["milk"]))
    let start = try await client.get(key)
    let seen = try decode(start.values.first)
    print("the cart \(key) holds \(seen)")

    // Both sessions add to the version they read, at the same time: the versions branch.
    async let first: Void = addItem(
        "eggs", to: key, seen: seen, context: start.context, session: "session A",
        client: client)
    try await withNodeDown(downPid) {
        try await addItem(
            "bread", to: key, seen: seen, context: start.context, session: "session B",
            client: client)
    }
    try await first

    let branched = try await client.get(key, r: info.n)
    let branches = try branched.values.map { try decode($0) }
    print("the cart now has \(branched.values.count) concurrent versions: \(branches)")

    // The union resolver merges the branches and writes the result back.
    let merged = try await client.get(key, r: info.n, resolver: .unionJson)
    let cart = try decode(merged.value)
    print(
        "unionJson merged \(merged.siblings) version(s) into \(cart)"
            + (merged.writtenBack ? ", written back" : ""))

    // A third session adds blindly (no context); a closure resolver merges that one: the
    // application's own rule, here the union keeping the first-seen order.
    try await client.put(key, try encode(["jam"]))
    let lastMerge = try await client.get(key, r: info.n) { siblings in
        var items: [String] = []
        for value in siblings.values {
            for item in try decode(value) where !items.contains(item) {
                items.append(item)
            }
        }
        return try encode(items)
    }
    let finalCart = try decode(lastMerge.value)
    print("a closure resolver merged \(lastMerge.siblings) version(s) into \(finalCart)")

    let settled = try await client.get(key, r: info.n)
    let wanted = ["milk", "eggs", "bread", "jam"]
    let missing = wanted.filter { !finalCart.contains($0) }
    guard missing.isEmpty else {
        throw CartError.lost(missing, in: finalCart)
    }
    guard settled.values.count == 1 else {
        throw CartError.notConverged(versions: settled.values.count)
    }
    print("nothing added was lost: \(finalCart); one version on every replica")
}

@main
struct ShoppingCart {
    static func main() async {
        do {
            try await shoppingCart()
        } catch {
            print("shopping cart failed: \(error)")
            exit(1)
        }
    }
}
