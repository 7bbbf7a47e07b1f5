// Tests of the Swift SDK against a live single-node DynamoKV server (memory engine, ephemeral
// port); ClusterTests.swift has those that need a 3-node cluster. The server binary comes from DYNAMOKV_BIN, else $CARGO_TARGET_DIR/release/dynamokv,
// else <repo>/target/release/dynamokv. tests/test_ffi.py drives the same scaffolding from
// Python on machines without Swift.

import DynamoKV
import Foundation
import XCTest

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

enum TestNodeError: Error, CustomStringConvertible {
    case noBinary([String])
    case noAddress(String)

    var description: String {
        switch self {
        case .noBinary(let tried):
            return "no dynamokv server binary; tried \(tried) (set DYNAMOKV_BIN)"
        case .noAddress(let line):
            return "the node did not print its address: \(line)"
        }
    }
}

/// Collects a child's stdout on a background queue and hands out its first line.
final class FirstLineReader: @unchecked Sendable {
    private let lock = NSLock()
    private let ready = DispatchSemaphore(value: 0)
    private var buffer = Data()
    private var line: String?
    private var ended = false

    init(_ handle: FileHandle) {
        // Keeps draining after the first line so the node never blocks writing to stdout.
        DispatchQueue.global().async {
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty {
                    break
                }
                self.append(chunk)
            }
            self.finish()
        }
    }

    private func append(_ chunk: Data) {
        lock.lock()
        defer { lock.unlock() }
        guard line == nil else { return }
        buffer.append(chunk)
        if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
            line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
            ready.signal()
        }
    }

    private func finish() {
        lock.lock()
        defer { lock.unlock() }
        if line == nil && !ended {
            ready.signal()
        }
        ended = true
    }

    /// The first line, or nil if none came before the deadline or the stream ended.
    func firstLine(within seconds: Double) -> String? {
        _ = ready.wait(timeout: .now() + seconds)
        lock.lock()
        defer { lock.unlock() }
        return line
    }
}

/// One memory-engine node, stopped (SIGTERM, then SIGKILL after a deadline) by `stop()`.
final class TestNode {
    let process: Process
    let address: String
    let nodeId: String
    /// `http://HOST:PORT/metrics` when the node was started with `--metrics-listen`.
    let metricsURL: URL?

    static func binary() throws -> String {
        let env = ProcessInfo.processInfo.environment
        var candidates: [String] = []
        if let bin = env["DYNAMOKV_BIN"], !bin.isEmpty {
            candidates.append(bin)
        }
        if let target = env["CARGO_TARGET_DIR"], !target.isEmpty {
            candidates.append(target + "/release/dynamokv")
        }
        // This file is <repo>/bindings-swift/Tests/DynamoKVTests/DynamoKVTests.swift.
        var repo = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 {
            repo = repo.deletingLastPathComponent()
        }
        candidates.append(repo.appendingPathComponent("target/release/dynamokv").path)
        for path in candidates where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        throw TestNodeError.noBinary(candidates)
    }

    /// The TOML config file given with `config`, removed when the node stops.
    private let configFile: URL?

    /// Starts a node; `config` is the text of a TOML config file, which the flags override;
    /// `extra` are further `serve` flags (`--join`, `--metrics-listen`).
    init(config: String? = nil, nodeId: String = "test-1", extra: [String] = []) throws {
        let binary = try TestNode.binary()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        var arguments = [
            "serve", "--listen", "127.0.0.1:0", "--engine", "memory", "--node-id", nodeId,
        ] + extra
        var configFile: URL? = nil
        if let config = config {
            let file = FileManager.default.temporaryDirectory
                .appendingPathComponent("dynamokv-test-\(UUID().uuidString).toml")
            try config.write(to: file, atomically: true, encoding: .utf8)
            arguments += ["--config", file.path]
            configFile = file
        }
        self.configFile = configFile
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let reader = FirstLineReader(output.fileHandleForReading)
        let line = reader.firstLine(within: 30) ?? ""
        // "dynamokv node test-1 listening on 127.0.0.1:PORT (pid N, data in memory)"
        guard let marker = line.range(of: " listening on ") else {
            TestNode.stop(process)
            if let file = configFile {
                try? FileManager.default.removeItem(at: file)
            }
            throw TestNodeError.noAddress(line)
        }
        self.process = process
        self.nodeId = nodeId
        self.address = String(line[marker.upperBound...].prefix { $0 != " " })
        // "... (pid N, data in memory), metrics at http://HOST:PORT/metrics"
        if let metrics = line.range(of: "metrics at ") {
            self.metricsURL = URL(
                string: String(line[metrics.upperBound...]).trimmingCharacters(in: .whitespaces))
        } else {
            self.metricsURL = nil
        }
    }

    func stop() {
        TestNode.stop(process)
        if let file = configFile {
            try? FileManager.default.removeItem(at: file)
        }
    }

    private static func stop(_ process: Process) {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.01)
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit {
        stop()
    }
}

final class DynamoKVTests: XCTestCase {
    private var node: TestNode!
    private var client: DynamoKvClient!

    override func setUpWithError() throws {
        try super.setUpWithError()
        node = try TestNode()
        client = try DynamoKvClient(seeds: [node.address])
    }

    override func tearDown() {
        client = nil
        node?.stop()
        node = nil
        super.tearDown()
    }

    private func uniqueKey(_ name: String) -> Data {
        Data("swift-\(name)-\(UUID().uuidString)".utf8)
    }

    private func bytes(_ text: String) -> Data {
        Data(text.utf8)
    }

    private func assertValues(
        _ key: Data, _ expected: [Data], file: StaticString = #filePath, line: UInt = #line
    ) async throws {
        let got = try await client.get(key: key)
        XCTAssertEqual(got.values, expected, file: file, line: line)
    }

    // MARK: 1. Siblings, overwrite, delete

    func testSiblingsThenOverwriteThenDelete() async throws {
        let key = uniqueKey("siblings")
        _ = try await client.put(key: key, value: bytes("v0"))
        let first = try await client.get(key: key)
        XCTAssertEqual(first.values, [bytes("v0")])
        let ctx0 = first.context
        XCTAssertFalse(ctx0.isEmpty)

        // Two writes from the same stale context are concurrent: both survive as siblings.
        _ = try await client.put(key: key, value: bytes("a"), context: ctx0)
        _ = try await client.put(key: key, value: bytes("b"), context: ctx0)
        let siblings = try await client.get(key: key)
        XCTAssertEqual(siblings.values.count, 2)
        XCTAssertEqual(Set(siblings.values), Set([bytes("a"), bytes("b")]))

        // A write with the context covering both supersedes them.
        _ = try await client.put(key: key, value: bytes("c"), context: siblings.context)
        let resolved = try await client.get(key: key)
        XCTAssertEqual(resolved.values, [bytes("c")])

        _ = try await client.delete(key: key, context: resolved.context)
        let deleted = try await client.get(key: key)
        XCTAssertTrue(deleted.values.isEmpty)

        _ = try await client.put(key: key, value: bytes("d"))
        try await assertValues(key, [bytes("d")])
    }

    func testFacadeStringKeysAndValues() async throws {
        let key = "swift-facade-\(UUID().uuidString)"
        try await client.put(key, "hello")
        let got = try await client.get(key)
        XCTAssertEqual(got.strings, ["hello"])
        try await client.put(key, bytes("bye"), context: got.context)
        let replaced = try await client.get(key, r: 1)
        XCTAssertEqual(replaced.strings, ["bye"])
        try await client.delete(key, context: replaced.context, w: 1)
        let gone = try await client.get(key)
        XCTAssertTrue(gone.isEmpty)
    }

    // MARK: 2. Bad input: the right error, nothing changed

    func testClientRefusesBadKeysAndValues() async throws {
        let key = uniqueKey("limits")
        _ = try await client.put(key: key, value: bytes("kept"))

        do {
            _ = try await client.put(key: Data(), value: bytes("x"))
            XCTFail("an empty key was accepted")
        } catch DynamoKvError.EmptyKey(let max) {
            XCTAssertEqual(max, 4096)
        }
        do {
            _ = try await client.get(key: Data())
            XCTFail("an empty key was accepted")
        } catch DynamoKvError.EmptyKey(let max) {
            XCTAssertEqual(max, 4096)
        }
        do {
            _ = try await client.put(key: Data(repeating: 0x6B, count: 4097), value: bytes("x"))
            XCTFail("a 4097-byte key was accepted")
        } catch DynamoKvError.KeyTooLarge(let size, let max) {
            XCTAssertEqual(size, 4097)
            XCTAssertEqual(max, 4096)
        }
        do {
            _ = try await client.put(key: key, value: Data(repeating: 0, count: 1_048_577))
            XCTFail("a 1048577-byte value was accepted")
        } catch DynamoKvError.ValueTooLarge(let size, let max) {
            XCTAssertEqual(size, 1_048_577)
            XCTAssertEqual(max, 1_048_576)
        }

        try await assertValues(key, [bytes("kept")])
    }

    func testServerRefusesBadKeysAndValuesToo() async throws {
        // Larger client-side limits, so the requests reach the server and its own check.
        let lax = try DynamoKvClient(
            seeds: [node.address],
            options: ClientOptions(maxKeyBytes: 1 << 20, maxValueBytes: 8 << 20))
        let key = uniqueKey("server-limits")
        _ = try await lax.put(key: key, value: bytes("kept"))

        do {
            _ = try await lax.put(key: Data(repeating: 0x6B, count: 4097), value: bytes("x"))
            XCTFail("the server accepted a 4097-byte key")
        } catch DynamoKvError.KeyTooLarge(let size, let max) {
            XCTAssertEqual(size, 4097)
            XCTAssertEqual(max, 4096)
        }
        do {
            _ = try await lax.put(key: key, value: Data(repeating: 0, count: 1_048_577))
            XCTFail("the server accepted a 1048577-byte value")
        } catch DynamoKvError.ValueTooLarge(let size, let max) {
            XCTAssertEqual(size, 1_048_577)
            XCTAssertEqual(max, 1_048_576)
        }

        let got = try await lax.get(key: key)
        XCTAssertEqual(got.values, [bytes("kept")])
    }

    func testInvalidContextIsRefused() async throws {
        let key = uniqueKey("ctx")
        let other = uniqueKey("ctx-other")
        _ = try await client.put(key: key, value: bytes("kept"))
        _ = try await client.put(key: other, value: bytes("theirs"))
        let foreign = try await client.get(key: other).context

        for context in [bytes("garbage"), foreign] {
            do {
                _ = try await client.put(key: key, value: bytes("x"), context: context)
                XCTFail("a bad context was accepted by put")
            } catch DynamoKvError.InvalidContext(let message) {
                XCTAssertFalse(message.isEmpty)
            }
            do {
                _ = try await client.delete(key: key, context: context)
                XCTFail("a bad context was accepted by delete")
            } catch DynamoKvError.InvalidContext(let message) {
                XCTAssertFalse(message.isEmpty)
            }
        }

        try await assertValues(key, [bytes("kept")])
        try await assertValues(other, [bytes("theirs")])
    }

    func testQuorumOutsideOneToNIsRefused() async throws {
        let key = uniqueKey("quorum")
        _ = try await client.put(key: key, value: bytes("kept"))
        let context = try await client.get(key: key).context

        // 0 is refused by the client; 2 and 5 by the server, whose N is 1.
        for r: UInt32 in [0, 2] {
            do {
                _ = try await client.get(key: key, r: r)
                XCTFail("r = \(r) was accepted")
            } catch DynamoKvError.InvalidQuorum(let message) {
                XCTAssertFalse(message.isEmpty)
            }
        }
        for w: UInt32 in [0, 2, 5] {
            do {
                _ = try await client.put(key: key, value: bytes("x"), context: context, w: w)
                XCTFail("put with w = \(w) was accepted")
            } catch DynamoKvError.InvalidQuorum(let message) {
                XCTAssertFalse(message.isEmpty)
            }
            do {
                _ = try await client.delete(key: key, context: context, w: w)
                XCTFail("delete with w = \(w) was accepted")
            } catch DynamoKvError.InvalidQuorum(let message) {
                XCTAssertFalse(message.isEmpty)
            }
        }

        try await assertValues(key, [bytes("kept")])
    }

    func testSyncReplicasWithinWIsAccepted() async throws {
        // The test node's W is 1: 0 and 1 are accepted, for puts and deletes alike.
        let key = uniqueKey("sync")
        let context = try await client.put(key: key, value: bytes("synced"), syncReplicas: 1)
        XCTAssertFalse(context.isEmpty)
        try await assertValues(key, [bytes("synced")])
        let got = try await client.get(key: key)
        _ = try await client.put(
            key: key, value: bytes("synced-w1"), context: got.context, w: 1, syncReplicas: 1)
        let again = try await client.get(key: key)
        _ = try await client.put(
            key: key, value: bytes("unsynced"), context: again.context, syncReplicas: 0)
        let last = try await client.get(key: key)
        XCTAssertEqual(last.values, [bytes("unsynced")])
        _ = try await client.delete(key: key, context: last.context, syncReplicas: 1)
        try await assertValues(key, [])
        // The facade passes it through too.
        let keyName = "swift-sync-\(UUID().uuidString)"
        try await client.put(keyName, "synced", syncReplicas: 1)
        let named = try await client.get(keyName)
        XCTAssertEqual(named.strings, ["synced"])
        try await client.delete(keyName, context: named.context, syncReplicas: 1)
        let gone = try await client.get(keyName)
        XCTAssertTrue(gone.isEmpty)
    }

    func testSyncReplicasAboveWIsRefused() async throws {
        // More than W is refused (by client-core when the call gives w, else by the node) and
        // writes nothing: neither on a fresh key nor over a stored value.
        let fresh = uniqueKey("sync-fresh")
        let freshCases: [(w: UInt32?, sync: UInt32)] = [(nil, 2), (nil, 5), (1, 2)]
        for (w, sync) in freshCases {
            do {
                _ = try await client.put(key: fresh, value: bytes("x"), w: w, syncReplicas: sync)
                XCTFail("put with syncReplicas = \(sync) was accepted")
            } catch DynamoKvError.InvalidQuorum(let message) {
                XCTAssertTrue(message.contains("sync_replicas = \(sync)"), message)
            }
        }
        try await assertValues(fresh, [])

        let key = uniqueKey("sync-above-w")
        _ = try await client.put(key: key, value: bytes("kept"))
        let context = try await client.get(key: key).context
        let cases: [(w: UInt32?, sync: UInt32)] = [(nil, 2), (1, 3), (nil, 5)]
        for (w, sync) in cases {
            do {
                _ = try await client.put(
                    key: key, value: bytes("x"), context: context, w: w, syncReplicas: sync)
                XCTFail("put with syncReplicas = \(sync) was accepted")
            } catch DynamoKvError.InvalidQuorum(let message) {
                XCTAssertTrue(message.contains("sync_replicas = \(sync)"), message)
            }
            do {
                _ = try await client.delete(key: key, context: context, w: w, syncReplicas: sync)
                XCTFail("delete with syncReplicas = \(sync) was accepted")
            } catch DynamoKvError.InvalidQuorum(let message) {
                XCTAssertTrue(message.contains("sync_replicas = \(sync)"), message)
            }
        }
        try await assertValues(key, [bytes("kept")])
    }

    func testInvalidConfigIsRefused() throws {
        let address: String = node.address
        let cases: [([String], ClientOptions?)] = [
            ([], nil),
            (["not-an-address"], nil),
            (["127.0.0.1:notaport"], nil),
            ([":7070"], nil),
            ([address], ClientOptions(requestTimeoutMs: 0)),
            ([address], ClientOptions(connectTimeoutMs: 0)),
            ([address], ClientOptions(attemptTimeoutMs: 0)),
            ([address], ClientOptions(maxKeyBytes: 0)),
        ]
        for (seeds, options) in cases {
            do {
                _ = try DynamoKvClient(seeds: seeds, options: options)
                XCTFail("seeds \(seeds) with \(String(describing: options)) were accepted")
            } catch DynamoKvError.InvalidConfig(let message) {
                XCTAssertFalse(message.isEmpty)
            }
        }
    }

    func testAttemptTimeoutIsAccepted() throws {
        let withAttempt = try DynamoKvClient(
            seeds: [node.address],
            options: ClientOptions(requestTimeoutMs: 5000, attemptTimeoutMs: 1500))
        XCTAssertEqual(withAttempt.nodeHealth(), [NodeHealth(address: node.address, up: true)])
    }

    func testNodeHealthOfAFreshClientListsEverySeedUp() throws {
        let seeds = ["127.0.0.1:1", "127.0.0.1:2"]
        let fresh = try DynamoKvClient(
            seeds: seeds, options: ClientOptions(attemptTimeoutMs: 1000))
        XCTAssertEqual(fresh.nodeHealth().map { $0.address }, seeds)
        XCTAssertTrue(fresh.nodeHealth().allSatisfy { $0.up })
    }

    func testNodeHealthAfterACallToALiveNode() async throws {
        let live = try DynamoKvClient(
            seeds: [node.address],
            options: ClientOptions(requestTimeoutMs: 5000, attemptTimeoutMs: 2000))
        let key = uniqueKey("health")
        try await live.put(key: key, value: bytes("v"))
        let got = try await live.get(key: key)
        XCTAssertEqual(got.values, [bytes("v")])
        XCTAssertEqual(live.nodeHealth(), [NodeHealth(address: node.address, up: true)])
    }

    func testStoppedNodeIsUnavailable() async throws {
        let doomed = try TestNode()
        let address = doomed.address
        doomed.stop()
        let lonely = try DynamoKvClient(
            seeds: [address],
            options: ClientOptions(connectTimeoutMs: 500, requestTimeoutMs: 2000, maxRetries: 0))
        do {
            _ = try await lonely.get(key: uniqueKey("gone"))
            XCTFail("a stopped node answered")
        } catch DynamoKvError.Unavailable(let message) {
            XCTAssertTrue(message.contains(address))
        } catch DynamoKvError.Timeout(let after) {
            XCTAssertEqual(after, 2.0, accuracy: 0.001)
        }
    }

    // MARK: Records, errors, concurrency

    func testClusterInfo() async throws {
        let info = try await client.clusterInfo()
        XCTAssertEqual(info.n, 1)
        XCTAssertGreaterThan(info.partitions, 0)
        XCTAssertEqual(info.answeredBy, "test-1")
        XCTAssertEqual(info.members.map { $0.id }, ["test-1"])
        XCTAssertGreaterThan(info.members.first?.weight ?? 0, 0)
    }

    func testErrorsCarryCodeAndMessage() async throws {
        do {
            _ = try await client.get(key: Data())
            XCTFail("an empty key was accepted")
        } catch let error as DynamoKvError {
            XCTAssertEqual(error, DynamoKvError.EmptyKey(max: 4096))
            XCTAssertEqual(error.code(), "EMPTY_KEY")
            XCTAssertTrue("\(error)".contains("key is empty"))
            XCTAssertTrue(error.localizedDescription.contains("key is empty"))
        }
        XCTAssertEqual(DynamoKvError.Timeout(after: 1.5).code(), "TIMEOUT")
        XCTAssertEqual(
            DynamoKvError.QuorumNotReached(needed: 2, got: 1, message: "m").code(),
            "QUORUM_NOT_REACHED")
        let lost = DynamoKvError.OutcomeUnknown(writeId: Data(repeating: 0xAB, count: 16), message: "m")
        XCTAssertEqual(lost.code(), "OUTCOME_UNKNOWN")
        XCTAssertTrue("\(lost)".contains(String(repeating: "ab", count: 16)))
        XCTAssertEqual(DynamoKvError.SiblingLimit(message: "m").code(), "SIBLING_LIMIT")
        XCTAssertEqual(DynamoKvError.ResolverFailed(message: "m").code(), "RESOLVER_FAILED")
    }

    // MARK: Write ids and the sibling limit

    func testSameWriteIdTwiceIsAppliedOnce() async throws {
        let key = uniqueKey("write-id")
        let writeId = Data((0..<16).map { _ in UInt8.random(in: 0...255) })
        _ = try await client.put(key: key, value: bytes("once"), writeId: writeId)
        _ = try await client.put(key: key, value: bytes("once"), writeId: writeId)
        try await assertValues(key, [bytes("once")])
        // The facade passes it through too.
        let keyName = "swift-write-id-\(UUID().uuidString)"
        try await client.put(keyName, "once", writeId: writeId)
        try await client.put(keyName, "once", writeId: writeId)
        let got = try await client.get(keyName)
        XCTAssertEqual(got.strings, ["once"])
    }

    func testMalformedWriteIdIsRefused() async throws {
        let key = uniqueKey("bad-write-id")
        _ = try await client.put(key: key, value: bytes("kept"))
        let context = try await client.get(key: key).context
        for writeId in [Data(), Data(count: 15), Data(count: 17)] {
            do {
                _ = try await client.put(key: key, value: bytes("x"), context: context, writeId: writeId)
                XCTFail("put with a \(writeId.count)-byte write id was accepted")
            } catch DynamoKvError.InvalidInput(let message) {
                XCTAssertTrue(message.contains("writeId must be 16 bytes"))
            }
            do {
                _ = try await client.delete(key: key, context: context, writeId: writeId)
                XCTFail("delete with a \(writeId.count)-byte write id was accepted")
            } catch DynamoKvError.InvalidInput(let message) {
                XCTAssertTrue(message.contains("writeId must be 16 bytes"))
            }
        }
        try await assertValues(key, [bytes("kept")])
    }

    func testBlindWritePastTheSiblingLimitIsRefused() async throws {
        let limited = try TestNode(config: "[limits]\nmax_siblings = 2\n")
        defer { limited.stop() }
        let lc = try DynamoKvClient(seeds: [limited.address])
        let key = uniqueKey("sibling-limit")
        _ = try await lc.put(key: key, value: bytes("one"))
        _ = try await lc.put(key: key, value: bytes("two"))
        do {
            _ = try await lc.put(key: key, value: bytes("three"))
            XCTFail("a third blind write was accepted")
        } catch DynamoKvError.SiblingLimit(let message) {
            XCTAssertFalse(message.isEmpty)
        }
        let got = try await lc.get(key: key)
        XCTAssertEqual(Set(got.values), Set([bytes("one"), bytes("two")]))
        XCTAssertEqual(got.values.count, 2)
        // A write with the get's context resolves the siblings and is accepted.
        _ = try await lc.put(key: key, value: bytes("resolved"), context: got.context)
        let resolved = try await lc.get(key: key)
        XCTAssertEqual(resolved.values, [bytes("resolved")])
    }

    func testConcurrentCallsShareOneClient() async throws {
        let shared: DynamoKvClient = client
        let prefix = "swift-concurrent-\(UUID().uuidString)-"
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<32 {
                group.addTask {
                    _ = try await shared.put("\(prefix)\(i)", "\(i)")
                }
            }
            try await group.waitForAll()
        }
        for i in 0..<32 {
            let got = try await shared.get("\(prefix)\(i)")
            XCTAssertEqual(got.strings, ["\(i)"])
        }
    }
}
