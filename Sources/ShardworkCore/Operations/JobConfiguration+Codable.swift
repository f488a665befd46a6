import ShardworkSDK

/// A job's configuration as JSON, with ElasticJob's field names (as its `JobConfigurationPOJO`)
/// plus `jobType`. `props` is an object of strings. Absent fields take the same defaults as absent
/// YAML fields (``JobConfiguration``'s); `jobName`, `jobType` and `shardingTotalCount` are required.
/// Decoding checks only the shape: ``ClusterOperations`` validates the values.
extension JobConfiguration: Codable {
    private enum CodingKeys: String, CodingKey {
        case jobName, jobType, cron, timeZone, shardingTotalCount, shardingItemParameters, jobParameter
        case monitorExecution, failover, misfire, maxTimeDiffSeconds, reconcileIntervalMinutes
        case jobShardingStrategyType, jobExecutorThreadPoolSizeProviderType, jobErrorHandlerType, jobListenerTypes
        case description, props, disabled, overwrite, label, staticSharding
    }

    public init(from decoder: any Decoder) throws {
        let values = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            jobName: try values.decode(String.self, forKey: .jobName),
            jobType: try values.decode(String.self, forKey: .jobType),
            cron: try values.decodeIfPresent(String.self, forKey: .cron),
            shardingTotalCount: try values.decode(Int.self, forKey: .shardingTotalCount))
        func read<Value: Decodable>(_ key: CodingKeys, into field: inout Value) throws {
            if let value = try values.decodeIfPresent(Value.self, forKey: key) { field = value }
        }
        timeZone = try values.decodeIfPresent(String.self, forKey: .timeZone)
        try read(.shardingItemParameters, into: &shardingItemParameters)
        try read(.jobParameter, into: &jobParameter)
        try read(.monitorExecution, into: &monitorExecution)
        try read(.failover, into: &failover)
        try read(.misfire, into: &misfire)
        try read(.maxTimeDiffSeconds, into: &maxTimeDiffSeconds)
        try read(.reconcileIntervalMinutes, into: &reconcileIntervalMinutes)
        jobShardingStrategyType = try values.decodeIfPresent(String.self, forKey: .jobShardingStrategyType)
        jobExecutorThreadPoolSizeProviderType = try values.decodeIfPresent(String.self, forKey: .jobExecutorThreadPoolSizeProviderType)
        jobErrorHandlerType = try values.decodeIfPresent(String.self, forKey: .jobErrorHandlerType)
        try read(.jobListenerTypes, into: &jobListenerTypes)
        try read(.description, into: &description)
        if let props = try values.decodeIfPresent([String: String].self, forKey: .props) {
            self.props = JobProperties(props)
        }
        try read(.disabled, into: &disabled)
        try read(.overwrite, into: &overwrite)
        label = try values.decodeIfPresent(String.self, forKey: .label)
        try read(.staticSharding, into: &staticSharding)
    }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        try values.encode(jobName, forKey: .jobName)
        try values.encode(jobType, forKey: .jobType)
        try values.encodeIfPresent(cron, forKey: .cron)
        try values.encodeIfPresent(timeZone, forKey: .timeZone)
        try values.encode(shardingTotalCount, forKey: .shardingTotalCount)
        try values.encode(shardingItemParameters, forKey: .shardingItemParameters)
        try values.encode(jobParameter, forKey: .jobParameter)
        try values.encode(monitorExecution, forKey: .monitorExecution)
        try values.encode(failover, forKey: .failover)
        try values.encode(misfire, forKey: .misfire)
        try values.encode(maxTimeDiffSeconds, forKey: .maxTimeDiffSeconds)
        try values.encode(reconcileIntervalMinutes, forKey: .reconcileIntervalMinutes)
        try values.encodeIfPresent(jobShardingStrategyType, forKey: .jobShardingStrategyType)
        try values.encodeIfPresent(jobExecutorThreadPoolSizeProviderType, forKey: .jobExecutorThreadPoolSizeProviderType)
        try values.encodeIfPresent(jobErrorHandlerType, forKey: .jobErrorHandlerType)
        try values.encode(jobListenerTypes, forKey: .jobListenerTypes)
        try values.encode(description, forKey: .description)
        // A key given twice keeps its last value, as the YAML map it came from did.
        var props: [String: String] = [:]
        for entry in self.props { props[entry.key] = entry.value }
        try values.encode(props, forKey: .props)
        try values.encode(disabled, forKey: .disabled)
        try values.encode(overwrite, forKey: .overwrite)
        try values.encodeIfPresent(label, forKey: .label)
        try values.encode(staticSharding, forKey: .staticSharding)
    }
}
