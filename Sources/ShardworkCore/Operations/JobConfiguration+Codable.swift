import ShardworkSDK

/// A job's configuration as JSON, with ElasticJob's field names (as its `JobConfigurationPOJO`)
/// plus `jobType`. `props` is an object of strings. Absent fields take the same defaults as absent
/// YAML fields (``JobConfiguration``'s); `jobName`, `jobType` and `shardingTotalCount` are required.
/// Decoding checks only the shape: ``ClusterOperations`` validates the values.
///
/// The keys are those of ``JobField/stored``: text that may be absent is written only when present,
/// every other field always.
extension JobConfiguration: Codable {
    /// A field's key in the JSON object. It is named `CodingKeys`, as Swift's own keys are, because
    /// decoding errors print the name.
    private struct CodingKeys: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }

        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: any Decoder) throws {
        let values = try decoder.container(keyedBy: CodingKeys.self)
        var job = JobConfiguration(jobName: "", jobType: "", cron: nil, shardingTotalCount: 0)
        /// A required field must be there; an optional one replaces the default only when present.
        func read<Value: Decodable>(_ field: JobField, into path: WritableKeyPath<JobConfiguration, Value>) throws {
            let key = CodingKeys(stringValue: field.key)
            if field.isRequired {
                job[keyPath: path] = try values.decode(Value.self, forKey: key)
            } else if let value = try values.decodeIfPresent(Value.self, forKey: key) {
                job[keyPath: path] = value
            }
        }
        // The required fields first, as the YAML reader takes them.
        for field in JobField.stored.filter(\.isRequired) + JobField.stored.filter({ !$0.isRequired }) {
            switch field.value {
            case .text(let path): try read(field, into: path)
            case .optionalText(let path): job[keyPath: path] = try values.decodeIfPresent(String.self, forKey: CodingKeys(stringValue: field.key))
            case .flag(let path): try read(field, into: path)
            case .whole(let path): try read(field, into: path)
            case .list(let path): try read(field, into: path)
            case .properties(let path):
                if let props = try values.decodeIfPresent([String: String].self, forKey: CodingKeys(stringValue: field.key)) {
                    job[keyPath: path] = JobProperties(props)
                }
            case .notStored: break
            }
        }
        self = job
    }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        for field in JobField.stored {
            let key = CodingKeys(stringValue: field.key)
            switch field.value {
            case .text(let path): try values.encode(self[keyPath: path], forKey: key)
            case .optionalText(let path): try values.encodeIfPresent(self[keyPath: path], forKey: key)
            case .flag(let path): try values.encode(self[keyPath: path], forKey: key)
            case .whole(let path): try values.encode(self[keyPath: path], forKey: key)
            case .list(let path): try values.encode(self[keyPath: path], forKey: key)
            case .properties(let path):
                // A key given twice keeps its last value, as the YAML map it came from did.
                var props: [String: String] = [:]
                for entry in self[keyPath: path] { props[entry.key] = entry.value }
                try values.encode(props, forKey: key)
            case .notStored: break
            }
        }
    }
}
