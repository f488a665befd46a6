import Foundation
@testable import ShardworkCore
import ShardworkSDK
import Testing

/// The table of a job's fields is the one list the YAML, the host file reader and the JSON form take
/// their fields from: it must hold every property of ``JobConfiguration``, and every field must
/// survive each way of writing a job and reading it back.
@Suite("The table of a job's fields")
struct JobFieldsTests {
    /// A job with only its required fields: everything else is the default.
    static let plain = JobConfiguration(jobName: "j", jobType: "t", cron: nil, shardingTotalCount: 1)

    /// Gives `field` of `job` a value other than its default, unlike that of any other field, and one
    /// that the reader accepts.
    static func change(_ field: JobField, index: Int, of job: inout JobConfiguration) {
        switch field.value {
        case .text(let path): job[keyPath: path] = "\(field.key)-\(index)"
        case .optionalText(let path): job[keyPath: path] = "\(field.key)-\(index)"
        case .flag(let path): job[keyPath: path].toggle()
        // Within the sharding items a job may have, and a Java int.
        case .whole(let path): job[keyPath: path] = index + 2
        case .list(let path): job[keyPath: path] = ["\(field.key)-a", "\(field.key)-b"]
        case .properties(let path): job[keyPath: path] = JobProperties([("\(field.key).a", "1"), ("\(field.key).b", "x: y")])
        case .notStored: break
        }
        // ElasticJob's rule for the item parameters: `item=text`.
        if field.key == "shardingItemParameters" {
            job.shardingItemParameters = "0=a,\(index)=b"
        }
    }

    /// A job whose every field differs from the default (failover and monitorExecution both on, as
    /// failover needs).
    static func everyFieldChanged() -> JobConfiguration {
        var job = plain
        for (index, field) in JobField.stored.enumerated() {
            change(field, index: index, of: &job)
        }
        return job
    }

    /// Each stored property of `job`, by name, as text.
    static func properties(of job: JobConfiguration) -> [String: String] {
        var values: [String: String] = [:]
        for child in Mirror(reflecting: job).children {
            if let label = child.label { values[label] = String(describing: child.value) }
        }
        return values
    }

    @Test("the table holds every stored property of JobConfiguration, in their order, and each key path is the property of its key")
    func coversEveryProperty() {
        let labels = Mirror(reflecting: Self.plain).children.map(\.label)
        #expect(labels == JobField.stored.map(\.key))

        let before = Self.properties(of: Self.plain)
        for (index, field) in JobField.stored.enumerated() {
            var job = Self.plain
            Self.change(field, index: index, of: &job)
            let after = Self.properties(of: job)
            let changed = after.keys.filter { after[$0] != before[$0] }
            #expect(changed == [field.key], "changing \(field.key) through the table changed \(changed)")
        }
    }

    @Test("the readers accept the table's keys, with ElasticJob's keys that no property holds; the config node has all but jobType")
    func derivedKeys() {
        #expect(Set(JobField.all.map(\.key)).count == JobField.all.count)
        #expect(Set(HostConfigurationReader.jobFields).subtracting(JobField.stored.map(\.key))
            == ["jobExecutorServiceHandlerType", "jobExtraConfigurations"])
        #expect(Set(HostConfigurationReader.jobFields).subtracting(ElasticJobYAML.fields) == ["jobType"])
        #expect(JobField.stored.filter(\.isRequired).map(\.key) == ["jobName", "jobType", "shardingTotalCount"])
    }

    @Test("YAML keeps every field: each is written (jobType is the root node's) and reads back the same")
    func yamlRoundTrip() throws {
        let job = Self.everyFieldChanged()
        let yaml = ElasticJobYAML.encode(job)
        let written = yaml.split(separator: "\n").filter { !$0.hasPrefix(" ") && !$0.hasPrefix("-") }
            .map { String($0.prefix { $0 != ":" }) }
        #expect(written == JobField.stored.filter(\.isInConfigNode).map(\.key).sorted())
        #expect(try ElasticJobYAML.decode(yaml, jobType: job.jobType, job: job.jobName) == job)
    }

    @Test("JSON keeps every field: each is written and reads back the same, through the Codable form and the job reader")
    func jsonRoundTrip() throws {
        let job = Self.everyFieldChanged()
        // Sorted, so that `props` is written in the order the job has it.
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let data = try encoder.encode(job)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(Set(object.keys) == Set(JobField.stored.map(\.key)))
        #expect(try JSONDecoder().decode(JobConfiguration.self, from: data) == job)
        #expect(try HostConfigurationReader.parseJob(String(decoding: data, as: UTF8.self)) == job)
    }

    @Test("absent fields keep JobConfiguration's defaults, in YAML and in JSON")
    func defaults() throws {
        #expect(try ElasticJobYAML.decode("jobName: j\nshardingTotalCount: 1\n", jobType: "t", job: "j") == Self.plain)
        #expect(try JSONDecoder().decode(JobConfiguration.self, from: Data(#"{"jobName":"j","jobType":"t","shardingTotalCount":1}"#.utf8))
            == Self.plain)
        #expect(try HostConfigurationReader.parseJob("jobName: j\njobType: t\nshardingTotalCount: 1\n") == Self.plain)
    }

    @Test("the providers a job names come in the table's order, one for each listener, nil for an absent strategy")
    func providerNames() {
        var job = Self.plain
        job.jobErrorHandlerType = "LOG"
        job.jobListenerTypes = ["a", "b"]
        let names = JobField.providerNames(in: job)
        #expect(names.map(\.field) == [
            "jobType", "jobShardingStrategyType", "jobExecutorThreadPoolSizeProviderType", "jobErrorHandlerType",
            "jobListenerTypes", "jobListenerTypes",
        ])
        #expect(names.map(\.kind) == [.jobType, .shardingStrategy, .executorStrategy, .errorHandler, .jobListener, .jobListener])
        #expect(names.map(\.name) == ["t", nil, nil, "LOG", "a", "b"])
    }
}
