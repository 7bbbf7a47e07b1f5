// Client-driven coordination, resolvers and batches against a real 3-node cluster, formed as an
// operator forms one: node-1 alone, node-2 and node-3 join it, then `dynamokv admin plan` and
// `admin commit`. One cluster is shared by every test of the class. These mirror the cluster
// tests of tests/test_ffi.py, which drive the same FFI from Python on machines without Swift.

import DynamoKV
import Foundation
import XCTest

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

enum TestClusterError: Error, CustomStringConvertible {
    case admin([String], String)
    case timedOut(String)

    var description: String {
        switch self {
        case .admin(let args, let output):
            return "dynamokv admin \(args.joined(separator: " ")) failed: \(output)"
        case .timedOut(let what):
            return "timed out waiting for \(what)"
        }
    }
}

/// Calls `check` until it returns a value, which is returned; throws after `seconds`.
func waitFor<T>(
    _ what: String, within seconds: Double = 60, _ check: () throws -> T?
) throws -> T {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        if let value = try? check() {
            return value
        }
        if Date() > deadline {
            throw TestClusterError.timedOut(what)
        }
        Thread.sleep(forTimeInterval: 0.05)
    }
}

/// The first capture group of `pattern` in `text`.
func firstMatch(_ pattern: String, in text: String) -> String? {
    guard let regex = try? NSRegularExpression(pattern: pattern, options: [.anchorsMatchLines]),
        let match = regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)),
        match.numberOfRanges > 1,
        let range = Range(match.range(at: 1), in: text)
    else {
        return nil
    }
    return String(text[range])
}

/// Three memory-engine nodes with metrics, formed into one ring of N = 3.
final class TestCluster {
    /// Gossip and the handover after the commit every 100 ms rather than every second.
    static let fastMembership = "[cluster]\ngossip_interval_ms = 100\ntransfer_interval_ms = 100\n"

    private(set) var nodes: [TestNode] = []
    private(set) var ringVersion: UInt64 = 0

    init() throws {
        do {
            let metrics = ["--metrics-listen", "127.0.0.1:0"]
            let first = try TestNode(
                config: TestCluster.fastMembership, nodeId: "node-1", extra: metrics)
            nodes.append(first)
            for i in 2...3 {
                nodes.append(
                    try TestNode(
                        config: TestCluster.fastMembership, nodeId: "node-\(i)",
                        extra: metrics + ["--join", first.address]))
            }
            ringVersion = try form()
        } catch {
            stop()
            throw error
        }
    }

    static func admin(_ args: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try TestNode.binary())
        process.arguments = ["admin"] + args
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let failure = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestClusterError.admin(args, failure)
        }
        return text
    }

    private func form() throws -> UInt64 {
        let first = nodes[0].address
        let ids = nodes.map { $0.nodeId }
        _ = try waitFor("node-1 to know every node") { () -> Bool? in
            let status = try TestCluster.admin(["status", "--node", first])
            return ids.allSatisfy { firstMatch("^\\s+(\($0))\\s", in: status) != nil } ? true : nil
        }
        let planned = try waitFor("a plan that can be committed") { () -> String? in
            firstMatch("--ring-version (\\d+)", in: try TestCluster.admin(["plan", "--node", first]))
        }
        let committed = try TestCluster.admin([
            "commit", "--node", first, "--ring-version", planned,
        ])
        guard let text = firstMatch("committed ring version (\\d+)", in: committed),
            let version = UInt64(text)
        else {
            throw TestClusterError.admin(["commit"], committed)
        }
        let nodes = self.nodes
        _ = try waitFor("every node on ring version \(version), handover done") { () -> Bool? in
            for node in nodes {
                let status = try TestCluster.admin(["status", "--node", node.address])
                if !status.contains("ring version \(version),") || !status.contains("no handover") {
                    return nil
                }
            }
            return true
        }
        return version
    }

    func node(_ id: String) -> TestNode {
        nodes.first { $0.nodeId == id }!
    }

    /// Each node's `dynamokv_requests_total{op=OP,outcome="ok"}` (0 before the first).
    func counters(_ op: String) throws -> [String: Int] {
        var out: [String: Int] = [:]
        for node in nodes {
            let text = try String(contentsOf: node.metricsURL!, encoding: .utf8)
            var value = 0
            for line in text.split(separator: "\n")
            where line.hasPrefix("dynamokv_requests_total{") && line.contains("op=\"\(op)\"")
                && line.contains("outcome=\"ok\"")
            {
                value = Int(Double(line.split(separator: " ").last ?? "0") ?? 0)
            }
            out[node.nodeId] = value
        }
        return out
    }

    func stop() {
        for node in nodes {
            kill(node.process.processIdentifier, SIGCONT)  // a node a test left stopped
            node.stop()
        }
        nodes = []
    }
}

func deltas(_ before: [String: Int], _ after: [String: Int]) -> [String: Int] {
    var out: [String: Int] = [:]
    for (id, value) in before {
        out[id] = (after[id] ?? 0) - value
    }
    return out
}

/// Thrown by the test resolvers: the facade must rethrow this very error.
struct CartError: Error, Equatable {
    let reason: String
}

/// Counts a resolver's calls across tasks.
final class CallLog: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [Siblings] = []

    func record(_ siblings: Siblings) {
        lock.lock()
        defer { lock.unlock() }
        entries.append(siblings)
    }

    var calls: [Siblings] {
        lock.lock()
        defer { lock.unlock() }
        return entries
    }
}

/// The union of JSON arrays of strings, sorted.
func unionOfStringArrays(_ siblings: Siblings) throws -> Data {
    var items = Set<String>()
    for value in siblings.values {
        guard let array = try JSONSerialization.jsonObject(with: value) as? [String] else {
            throw CartError(reason: "not a JSON array of strings")
        }
        items.formUnion(array)
    }
    return try JSONSerialization.data(withJSONObject: items.sorted())
}

func jsonStrings(_ data: Data?) -> [String]? {
    guard let data = data else { return nil }
    return (try? JSONSerialization.jsonObject(with: data)) as? [String]
}

final class ClusterTests: XCTestCase {
    private static var shared: TestCluster?
    private static var startError: Error?

    override class func setUp() {
        super.setUp()
        do {
            shared = try TestCluster()
        } catch {
            startError = error
        }
    }

    override class func tearDown() {
        shared?.stop()
        shared = nil
        super.tearDown()
    }

    private var cluster: TestCluster!
    private var client: DynamoKvClient!

    override func setUpWithError() throws {
        try super.setUpWithError()
        if let error = ClusterTests.startError {
            throw error
        }
        cluster = ClusterTests.shared
        client = try clusterClient()
    }

    /// A client given node-1 only: it learns the other nodes from the ring it pulls.
    private func clusterClient(_ options: ClientOptions = ClientOptions(requestTimeoutMs: 10_000))
        throws -> DynamoKvClient
    {
        try DynamoKvClient(seeds: [cluster.nodes[0].address], options: options)
    }

    private func uniqueKey(_ name: String) -> String {
        "swift-cluster-\(name)-\(UUID().uuidString)"
    }

    /// Blind puts of `values`: concurrent with each other, so siblings (R = 3 shows them all).
    @discardableResult
    private func makeSiblings(_ key: String, _ values: [String]) async throws -> GetResult {
        for value in values {
            try await client.put(key, value)
        }
        let got = try await client.get(key, r: 3)
        XCTAssertEqual(Set(got.strings), Set(values))
        XCTAssertEqual(got.values.count, values.count)
        return got
    }

    // MARK: Coordination

    func testClusterFormsAndTheClientPullsItsRing() async throws {
        XCTAssertEqual(client.coordination(), .client)
        XCTAssertNil(client.ringVersion())
        try await client.connect()
        XCTAssertEqual(client.ringVersion(), cluster.ringVersion)
        let info = try await client.clusterInfo()
        XCTAssertEqual(info.ringVersion, cluster.ringVersion)
        XCTAssertEqual(info.members.map { $0.id }.sorted(), ["node-1", "node-2", "node-3"])
        XCTAssertEqual(info.n, 3)
        let refreshed = try await client.refreshRing()
        XCTAssertEqual(refreshed, cluster.ringVersion)
        XCTAssertEqual(
            Set(client.nodeHealth().map { $0.address }), Set(cluster.nodes.map { $0.address }))
    }

    func testClientDrivenPutsAndGetsGoToTheKeysReplicas() async throws {
        let info = try await client.clusterInfo()
        var firstReplicas = Set<String>()
        for i in 0..<8 {
            let key = uniqueKey("routed-\(i)")
            let list = try preferenceList(
                members: info.members, partitions: info.partitions, key: Data(key.utf8), n: info.n)
            XCTAssertEqual(list.replicas.sorted(), ["node-1", "node-2", "node-3"])
            let first = list.replicas[0]
            firstReplicas.insert(first)

            let puts = try cluster.counters("put")
            try await client.put(key, "routed")
            var expected: [String: Int] = [:]
            for node in cluster.nodes {
                expected[node.nodeId] = node.nodeId == first ? 1 : 0
            }
            XCTAssertEqual(deltas(puts, try cluster.counters("put")), expected)

            let reads = try cluster.counters("read_replica")
            let gets = try cluster.counters("get")
            let got = try await client.get(key)
            XCTAssertEqual(got.strings, ["routed"])
            let moved = try waitFor("R replica reads", within: 10) { () -> [String: Int]? in
                let d = deltas(reads, try self.cluster.counters("read_replica"))
                return d.values.reduce(0, +) >= Int(info.r) ? d : nil
            }
            XCTAssertTrue(Set(moved.keys).isSubset(of: Set(list.replicas)))
            XCTAssertTrue(moved.values.allSatisfy { (0...1).contains($0) })
            XCTAssertTrue(deltas(gets, try cluster.counters("get")).values.allSatisfy { $0 == 0 })
        }
        XCTAssertGreaterThan(firstReplicas.count, 1)
    }

    func testServerDrivenModeSendsEverythingToTheSeed() async throws {
        let seed = cluster.nodes[0]
        let viaSeed = try DynamoKvClient(
            seeds: [seed.address], options: ClientOptions(coordination: .server))
        XCTAssertEqual(viaSeed.coordination(), .server)
        XCTAssertNil(viaSeed.ringVersion())
        let key = uniqueKey("server-driven")
        let puts = try cluster.counters("put")
        let gets = try cluster.counters("get")
        try await viaSeed.put(key, "via the seed")
        let got = try await viaSeed.get(key)
        XCTAssertEqual(got.strings, ["via the seed"])
        var onlySeed: [String: Int] = [:]
        for node in cluster.nodes {
            onlySeed[node.nodeId] = node === seed ? 1 : 0
        }
        XCTAssertEqual(deltas(puts, try cluster.counters("put")), onlySeed)
        XCTAssertEqual(deltas(gets, try cluster.counters("get")), onlySeed)
    }

    // MARK: Resolvers

    func testClosureResolverMergesSiblingsAndWritesBack() async throws {
        let log = CallLog()
        let key = uniqueKey("cart")
        try await makeSiblings(key, ["[\"apple\"]", "[\"pear\"]"])
        let resolved = try await client.get(key, r: 3) { siblings in
            log.record(siblings)
            return try unionOfStringArrays(siblings)
        }
        XCTAssertEqual(jsonStrings(resolved.value), ["apple", "pear"])
        XCTAssertEqual(resolved.siblings, 2)
        XCTAssertTrue(resolved.writtenBack)
        XCTAssertEqual(log.calls.count, 1)
        let call = try XCTUnwrap(log.calls.first)
        XCTAssertEqual(call.key, Data(key.utf8))
        XCTAssertEqual(Set(call.strings), ["[\"apple\"]", "[\"pear\"]"])
        XCTAssertEqual(call.timestampsMs.count, 2)
        XCTAssertFalse(call.tombstone)
        // The write-back left one version on every replica.
        let after = try await client.get(key, r: 3)
        XCTAssertEqual(after.values, [resolved.value!])
        try await client.put(key, "[\"fig\"]", context: resolved.context)
        let replaced = try await client.get(key, r: 3)
        XCTAssertEqual(replaced.strings, ["[\"fig\"]"])

        // Without write-back the siblings stay.
        let kept = uniqueKey("cart-no-write-back")
        try await makeSiblings(kept, ["[\"a\"]", "[\"b\"]"])
        let unwritten = try await client.get(kept, r: 3, writeBack: false) { siblings in
            try unionOfStringArrays(siblings)
        }
        XCTAssertEqual(jsonStrings(unwritten.value), ["a", "b"])
        XCTAssertFalse(unwritten.writtenBack)
        let still = try await client.get(kept, r: 3)
        XCTAssertEqual(still.values.count, 2)

        // One value: the resolver is not called. None: no value.
        let single = uniqueKey("cart-single")
        try await client.put(single, "[\"one\"]")
        let one = try await client.get(single, r: 3) { siblings in
            log.record(siblings)
            return Data()
        }
        XCTAssertEqual(one.string, "[\"one\"]")
        XCTAssertEqual(one.siblings, 1)
        let none = try await client.get(uniqueKey("cart-none"), resolver: .unionJson)
        XCTAssertNil(none.value)
        XCTAssertEqual(none.siblings, 0)
        XCTAssertEqual(log.calls.count, 1)
    }

    func testThrowingResolverRethrowsItsOwnErrorAndWritesNothing() async throws {
        let key = uniqueKey("throwing")
        let before = try await makeSiblings(key, ["[\"x\"]", "[\"y\"]"])
        do {
            _ = try await client.get(key, r: 3) { siblings -> Data in
                throw CartError(reason: "cannot merge \(siblings.values.count) values")
            }
            XCTFail("a throwing resolver did not throw")
        } catch let error as CartError {
            // The closure's own error, unchanged.
            XCTAssertEqual(error, CartError(reason: "cannot merge 2 values"))
        }
        // The same through a batch: that key carries the closure's error.
        let results = try await client.getMany([key], r: 3) { _ -> Data in
            throw CartError(reason: "not in a batch either")
        }
        XCTAssertEqual(results.count, 1)
        if case .failure(let error) = results[0] {
            XCTAssertEqual(error as? CartError, CartError(reason: "not in a batch either"))
        } else {
            XCTFail("the batch resolved a key its resolver refused")
        }
        // Nothing was written: both siblings are still there, under the same causal context.
        let after = try await client.get(key, r: 3)
        XCTAssertEqual(Set(after.values), Set(before.values))
        let was = try describeContext(key: Data(key.utf8), context: before.context)
        let now = try describeContext(key: Data(key.utf8), context: after.context)
        XCTAssertEqual(was.clock, now.clock)
        XCTAssertEqual(was.seenWrites, now.seenWrites)
    }

    func testBuiltinResolvers() async throws {
        // lastWriterWins: the later write, though its bytes sort first.
        let lww = uniqueKey("lww")
        try await client.put(lww, "zzz-first")
        let first = try await client.get(lww, r: 3)
        let t0 = Double(try XCTUnwrap(first.timestampsMs.first))
        _ = try waitFor("the clock to pass the first write", within: 5) { () -> Bool? in
            Date().timeIntervalSince1970 * 1000 > t0 + 2 ? true : nil
        }
        try await client.put(lww, "aaa-second")
        let both = try await client.get(lww, r: 3)
        XCTAssertEqual(both.values.count, 2)
        XCTAssertEqual(Set(both.timestampsMs).count, 2)
        let latest = try await client.get(lww, r: 3, resolver: .lastWriterWins)
        XCTAssertEqual(latest.string, "aaa-second")
        XCTAssertTrue(latest.writtenBack)
        let settled = try await client.get(lww, r: 3)
        XCTAssertEqual(settled.strings, ["aaa-second"])

        // unionJson: every element once.
        let union = uniqueKey("union")
        try await makeSiblings(union, ["[\"apple\",\"pear\"]", "[\"pear\",\"fig\"]"])
        let merged = try await client.get(union, r: 3, resolver: .unionJson)
        XCTAssertEqual(jsonStrings(merged.value)?.sorted(), ["apple", "fig", "pear"])
        let converged = try await client.get(union, r: 3)
        XCTAssertEqual(converged.values, [merged.value!])

        // unionJson on a value that is not a JSON array: ResolverFailed, nothing written.
        let bad = uniqueKey("union-bad")
        try await makeSiblings(bad, ["[\"apple\"]", "not json"])
        do {
            _ = try await client.get(bad, r: 3, resolver: .unionJson)
            XCTFail("unionJson merged a value that is not JSON")
        } catch DynamoKvError.ResolverFailed(let message) {
            XCTAssertTrue(message.contains("not JSON"), message)
        }
        let untouched = try await client.get(bad, r: 3)
        XCTAssertEqual(untouched.values.count, 2)
    }

    func testTimestampsTombstoneAndALoneValueBesideADelete() async throws {
        let log = CallLog()
        let key = uniqueKey("tombstone")
        let start = Date().timeIntervalSince1970 * 1000
        try await client.put(key, "v0")
        let got = try await client.get(key, r: 3)
        XCTAssertFalse(got.tombstone)
        XCTAssertEqual(got.timestampsMs.count, 1)
        let written = Double(got.timestampsMs[0])
        XCTAssertGreaterThanOrEqual(written, start - 5_000)
        XCTAssertLessThanOrEqual(written, Date().timeIntervalSince1970 * 1000 + 5_000)
        // A put and a delete from the same context: concurrent, the delete as a tombstone.
        try await client.put(key, "a", context: got.context)
        try await client.delete(key, context: got.context)
        let both = try await client.get(key, r: 3)
        XCTAssertEqual(both.strings, ["a"])
        XCTAssertTrue(both.tombstone)
        // One value and a tombstone: written back without calling the resolver.
        let resolved = try await client.get(key, r: 3) { siblings in
            log.record(siblings)
            return Data()
        }
        XCTAssertEqual(resolved.string, "a")
        XCTAssertEqual(resolved.siblings, 1)
        XCTAssertTrue(resolved.writtenBack)
        XCTAssertTrue(log.calls.isEmpty)
        let settled = try await client.get(key, r: 3)
        XCTAssertEqual(settled.strings, ["a"])
        XCTAssertFalse(settled.tombstone)
    }

    // MARK: Batches

    func testBatchesWithOneBadKey() async throws {
        let k1 = uniqueKey("batch-1")
        let k2 = uniqueKey("batch-2")
        let missing = uniqueKey("batch-missing")
        let put = try await client.putMany([PutItem(k1, "1"), PutItem("", "x"), PutItem(k2, "2")])
        XCTAssertEqual(put.count, 3)
        XCTAssertFalse(try put[0].get().isEmpty)
        XCTAssertThrowsError(try put[1].get()) { error in
            XCTAssertEqual(error as? DynamoKvError, DynamoKvError.EmptyKey(max: 4096))
        }
        XCTAssertFalse(try put[2].get().isEmpty)

        let got = try await client.getMany([k1, "", k2, missing])
        XCTAssertEqual(try got[0].get().strings, ["1"])
        XCTAssertThrowsError(try got[1].get())
        XCTAssertEqual(try got[2].get().strings, ["2"])
        XCTAssertTrue(try got[3].get().isEmpty)

        // Contexts from the batch get: these writes supersede, one value each.
        let replaced = try await client.putMany(
            [
                PutItem(k1, "1b", context: try got[0].get().context),
                PutItem(k2, "2b", context: try got[2].get().context),
            ], w: 3)
        XCTAssertEqual(replaced.filter { (try? $0.get()) != nil }.count, 2)
        let again = try await client.getMany([k1, k2], r: 3)
        XCTAssertEqual(try again.map { try $0.get().strings }, [["1b"], ["2b"]])

        // Resolving: a mergeable key, an empty one, one unionJson refuses, a lone value.
        let merge = uniqueKey("batch-merge")
        let bad = uniqueKey("batch-not-json")
        let lone = uniqueKey("batch-lone")
        try await makeSiblings(merge, ["[\"a\"]", "[\"b\"]"])
        try await makeSiblings(bad, ["[\"a\"]", "{}"])
        try await client.put(lone, "[\"lone\"]")
        let resolved = try await client.getMany([merge, "", bad, lone], r: 3, resolver: .unionJson)
        XCTAssertEqual(jsonStrings(try resolved[0].get().value), ["a", "b"])
        XCTAssertThrowsError(try resolved[1].get()) { error in
            XCTAssertEqual(error as? DynamoKvError, DynamoKvError.EmptyKey(max: 4096))
        }
        XCTAssertThrowsError(try resolved[2].get()) { error in
            guard case .ResolverFailed? = error as? DynamoKvError else {
                return XCTFail("\(error) is not ResolverFailed")
            }
        }
        XCTAssertEqual(try resolved[3].get().string, "[\"lone\"]")
        let notJson = try await client.get(bad, r: 3)
        XCTAssertEqual(notJson.values.count, 2)
    }

    // MARK: Options, conformance, failures

    func testNewClientOptions() async throws {
        let seed = cluster.nodes[0].address
        for bad in [
            ClientOptions(ringRefreshIntervalMs: 0), ClientOptions(hedgeAfterMs: 0),
            ClientOptions(batchConcurrency: 0),
        ] {
            XCTAssertThrowsError(try DynamoKvClient(seeds: [seed], options: bad)) { error in
                guard case .InvalidConfig? = error as? DynamoKvError else {
                    return XCTFail("\(error) is not InvalidConfig")
                }
            }
        }
        let tuned = try DynamoKvClient(
            seeds: [seed],
            options: ClientOptions(
                requestTimeoutMs: 10_000, coordination: .client, ringRefreshIntervalMs: 200,
                hedgeAfterMs: 20, batchConcurrency: 2))
        let keys = (0..<10).map { uniqueKey("options-\($0)") }
        let put = try await tuned.putMany(keys.map { PutItem($0, $0) })
        XCTAssertEqual(put.filter { (try? $0.get()) != nil }.count, keys.count)
        let got = try await tuned.getMany(keys)
        XCTAssertEqual(try got.map { try $0.get().strings }, keys.map { [$0] })
        XCTAssertEqual(tuned.ringVersion(), cluster.ringVersion)
    }

    func testConformanceVectors() throws {
        // This file is <repo>/bindings-swift/Tests/DynamoKVTests/ClusterTests.swift.
        var repo = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 {
            repo = repo.deletingLastPathComponent()
        }
        let file = repo.appendingPathComponent("conformance/vectors.json")
        let vectors = try XCTUnwrap(
            try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
        func unhex(_ text: Any?) -> Data {
            let hex = Array((text as? String ?? "").utf8)
            return Data(
                stride(from: 0, to: hex.count, by: 2).map {
                    UInt8(String(decoding: hex[$0..<$0 + 2], as: UTF8.self), radix: 16)!
                })
        }
        func hex(_ data: Data) -> String {
            data.map { String(format: "%02x", $0) }.joined()
        }
        func dots(_ list: Any?) -> [ClockEntry] {
            (list as? [[String: Any]] ?? []).map {
                ClockEntry(
                    actor: UInt64($0["actor"] as? String ?? "")!,
                    counter: ($0["counter"] as? NSNumber)?.uint64Value ?? 0)
            }
        }
        var checked = 0
        for v in vectors["keys"] as? [[String: Any]] ?? [] {
            let key = unhex(v["key_hex"])
            XCTAssertEqual(keyPosition(key: key), v["position"] as? String, "\(v["name"]!)")
            for (q, p) in v["partition"] as? [String: NSNumber] ?? [:] {
                XCTAssertEqual(try partitionOf(key: key, partitions: UInt32(q)!), p.uint32Value)
            }
            checked += 1
        }
        for ring in vectors["rings"] as? [[String: Any]] ?? [] {
            let members = (ring["members"] as? [[String: Any]] ?? []).map {
                MemberInfo(
                    id: $0["id"] as! String, address: $0["address"] as! String,
                    zone: $0["zone"] as! String, weight: ($0["weight"] as! NSNumber).uint32Value)
            }
            let partitions = (ring["partitions"] as! NSNumber).uint32Value
            let n = (ring["n"] as! NSNumber).uint32Value
            for v in ring["keys"] as? [[String: Any]] ?? [] {
                let key = unhex(v["key_hex"])
                XCTAssertEqual(
                    try partitionOf(key: key, partitions: partitions),
                    (v["partition"] as! NSNumber).uint32Value)
                let list = try preferenceList(
                    members: members, partitions: partitions, key: key, n: n)
                XCTAssertEqual(list.replicas, v["preference_list"] as? [String])
                XCTAssertEqual(list.fallbacks, v["fallbacks"] as? [String])
                checked += 1
            }
        }
        for v in vectors["contexts"] as? [[String: Any]] ?? [] {
            let described = try describeContext(key: unhex(v["key_hex"]), context: unhex(v["bytes_hex"]))
            let want = v["decoded"] as! [String: Any]
            XCTAssertEqual(described.clock, dots(want["clock"]), "\(v["name"]!)")
            XCTAssertEqual(described.cloud, dots(want["cloud"]), "\(v["name"]!)")
            XCTAssertEqual(described.seenWrites.map(hex), want["seen_writes"] as? [String])
            XCTAssertEqual(described.fastestReplica, want["fastest_replica"] as? String)
            checked += 1
        }
        var messages: [String: Set<String>] = [:]
        for v in vectors["invalid_contexts"] as? [[String: Any]] ?? [] {
            do {
                _ = try describeContext(key: unhex(v["key_hex"]), context: unhex(v["bytes_hex"]))
                XCTFail("invalid context \(v["name"]!) was accepted")
            } catch DynamoKvError.InvalidContext(let message) {
                messages[v["error"] as! String, default: []].insert(message)
            }
            checked += 1
        }
        XCTAssertEqual(messages["malformed"]?.count, 1)
        XCTAssertEqual(messages["wrong_key"]?.count, 1)
        XCTAssertNotEqual(messages["malformed"], messages["wrong_key"])
        let known = (messages["malformed"] ?? []).union(messages["wrong_key"] ?? [])
        XCTAssertTrue((messages["invalid"] ?? []).isDisjoint(with: known))
        XCTAssertGreaterThanOrEqual(checked, 20 + 4 + 8 + 6)
    }

    func testStoppedNodeIsRoutedAround() async throws {
        let victim = cluster.node("node-3")
        // The attempt timeout stays above a node's replica timeout (2 s) plus half a second.
        let patient = try clusterClient(
            ClientOptions(requestTimeoutMs: 20_000, attemptTimeoutMs: 3_000))
        try await patient.connect()
        let info = try await patient.clusterInfo()
        // A key whose writes go to node-3 first.
        var key = ""
        for i in 0..<1000 {
            let candidate = uniqueKey("stopped-\(i)")
            let list = try preferenceList(
                members: info.members, partitions: info.partitions, key: Data(candidate.utf8),
                n: info.n)
            if list.replicas.first == "node-3" {
                key = candidate
                break
            }
        }
        XCTAssertFalse(key.isEmpty)
        kill(victim.process.processIdentifier, SIGSTOP)
        defer { kill(victim.process.processIdentifier, SIGCONT) }
        try await patient.put(key, "[\"before\"]", w: 2)
        let got = try await patient.get(key, r: 2)
        XCTAssertEqual(got.strings, ["[\"before\"]"])
        try await patient.put(key, "[\"after\"]", context: got.context, w: 2)
        let after = try await patient.get(key, r: 2)
        XCTAssertEqual(after.strings, ["[\"after\"]"])
        try await patient.put(key, "[\"sibling\"]", w: 2)
        let merged = try await patient.get(key, r: 2, resolver: .unionJson)
        XCTAssertEqual(Set(jsonStrings(merged.value) ?? []), ["after", "sibling"])
        XCTAssertTrue(merged.writtenBack)
        let down = patient.nodeHealth().first { $0.address == victim.address }
        XCTAssertEqual(down?.up, false)
    }
}
