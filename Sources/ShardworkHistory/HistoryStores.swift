public import Logging
public import ShardworkCore

/// The store a host's `tracing:` settings name.
public enum HistoryStores {
    /// Opens the store (without preparing it).
    public static func open(_ settings: TracingSettings, ip: String, hostSettings: HostSettings, logger: Logger) throws -> any HistoryStore {
        switch settings.database {
        case .sqlite:
            return try SQLiteHistoryStore(path: settings.sqlitePath(ip: ip, host: hostSettings) ?? "history.sqlite")
        case .postgresql(let postgres):
            return PostgresHistoryStore(postgres, logger: logger)
        }
    }

    /// Where the history goes, for the log (never the password).
    public static func describe(_ settings: TracingSettings, ip: String, hostSettings: HostSettings) -> String {
        switch settings.database {
        case .sqlite:
            "sqlite \(settings.sqlitePath(ip: ip, host: hostSettings) ?? "")"
        case .postgresql(let postgres):
            "postgresql \(postgres.user)@\(postgres.host):\(postgres.port)/\(postgres.database)"
        }
    }
}
