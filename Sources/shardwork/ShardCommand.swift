import ArgumentParser
import Foundation
import ShardworkCore
import ShardworkSDK

struct ShardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shard",
        abstract: "Show the assignment a sharding strategy makes.",
        discussion: """
            The instances are taken in the order given (in a cluster, the host passes them in \
            descending order of instance id, as ElasticJob does). --instances "" means no instance.
            """)

    @Option(help: "The sharding strategy, by name or alias (average, odd-even, round-robin, AVG_ALLOCATION, ...).")
    var strategy: String

    @Option(help: "The job name (the odd-even and round-robin strategies hash it).")
    var job: String

    @Option(help: ArgumentHelp("Instance ids, comma-separated, in order.", valueName: "id,id,..."))
    var instances: String

    @Option(help: "The sharding total count.")
    var total: Int

    @Flag(help: "Print one JSON object {instanceId: [items]} in the strategy's key order.")
    var json = false

    @OptionGroup var plugins: PluginOptions

    func run() throws {
        let instanceIDs = try parseInstances()
        guard total >= 1 else {
            throw CLIFailure.badInput("--total must be at least 1 (shardingTotalCount should be larger than zero), got \(total)")
        }
        guard total <= ShardingStrategyInstance.maximumTotalCount else {
            throw CLIFailure.badInput("--total must be at most \(ShardingStrategyInstance.maximumTotalCount), got \(total)")
        }
        let logger = try plugins.makeLogger()
        let (registry, _) = try plugins.loadRegistry(logger: logger)
        let provider: RegisteredProvider
        do {
            provider = try registry.resolve(.shardingStrategy, strategy)
        } catch {
            throw CLIFailure.badInput("--strategy: \(error)")
        }
        let assignment: ShardingAssignment
        do {
            let instance = try ShardingStrategyInstance(
                provider, setup: ProviderSetup(jobName: job, providerName: strategy))
            assignment = try instance.shard(jobName: job, instances: instanceIDs, totalCount: total)
        } catch {
            throw CLIFailure.failed("\(error)")
        }
        if json {
            let members = assignment.entries.map { entry in
                JSONOutput.string(entry.instanceID) + ":[" + entry.items.map(String.init).joined(separator: ",") + "]"
            }
            print("{" + members.joined(separator: ",") + "}")
        } else {
            for entry in assignment.entries {
                print("\(entry.instanceID): \(entry.items.map(String.init).joined(separator: ", "))")
            }
        }
    }

    private func parseInstances() throws -> [String] {
        guard !instances.isEmpty else { return [] }
        let ids = instances.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        var seen = Set<String>()
        for (position, id) in ids.enumerated() {
            guard !id.isEmpty else {
                throw CLIFailure.badInput("--instances: instance \(position + 1) is empty (ids are separated by single commas)")
            }
            guard seen.insert(id).inserted else {
                throw CLIFailure.badInput("--instances: '\(id)' is listed twice; instance ids are unique")
            }
        }
        return ids
    }
}
