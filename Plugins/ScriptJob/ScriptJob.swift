import PluginSupport
import ShardworkSDK

/// ElasticJob's script job (type `SCRIPT`, reference §8): each item runs `script.command.line` with
/// one extra last argument, the item's sharding context as Gson's JSON. Exit status 0 is success;
/// anything else fails the item with the status as its code and the end of the script's standard
/// error in the message. With `script.timeout.seconds`, a script that runs longer has its whole
/// process group killed and the item fails.
struct ScriptJob: SimpleJob {
    static let commandLineKey = "script.command.line"
    static let timeoutKey = "script.timeout.seconds"

    /// The program and its arguments, split as ElasticJob's commons-exec splits them.
    let command: [String]
    let timeoutSeconds: Int?
    let logger: PluginLogger

    init(_ setup: ProviderSetup) throws {
        let properties = setup.properties
        let line = try properties.requiredNonEmpty(
            Self.commandLineKey, "the command each item runs, for example `/opt/jobs/export.sh --full`")
        command = try CommandLineWords.split(line, key: Self.commandLineKey)
        timeoutSeconds = properties[Self.timeoutKey] == nil ? nil : try properties.positiveInteger(Self.timeoutKey, default: 1)
        logger = setup.logger
    }

    func execute(_ context: ShardingContext) async throws {
        let arguments = command + [JSONText.shardingContext(context)]
        let timeout = timeoutSeconds
        let outcome = try await BlockingWork.run("shardwork-script") {
            try ScriptProcess.run(arguments, timeoutSeconds: timeout, isCancelled: { context.isCancelled }) { line in
                context.logger.info("\(arguments[0]): \(line)")
            }
        }
        let program = command[0]
        let stderrTail = outcome.standardErrorTail.isEmpty ? "" : "; the end of its standard error: \(outcome.standardErrorTail)"
        switch outcome.ending {
        case .exited(0):
            return
        case .exited(let status):
            throw JobError("script \(program) exited with status \(status)\(stderrTail)", code: status)
        case .signalled(let signal):
            throw JobError("script \(program) was killed by signal \(signal)\(stderrTail)", code: 128 + signal)
        case .timedOut:
            throw JobError(
                "script \(program) ran longer than \(Self.timeoutKey) (\(timeout ?? 0) s): its process group was killed\(stderrTail)",
                code: ScriptProcess.timedOutCode)
        case .cancelled:
            throw JobError("script \(program) was stopped because the host asked the item to stop: its process group was killed\(stderrTail)",
                           code: ScriptProcess.timedOutCode)
        }
    }
}

/// Splits a command line into words as ElasticJob's commons-exec `CommandLine.parse` does: at spaces
/// and tabs, with single or double quotes around words that contain them. No shell is involved: to
/// use pipes or variables, name a shell (`/bin/sh -c "…"`).
enum CommandLineWords {
    static func split(_ line: String, key: String) throws(ConfigurationError) -> [String] {
        var words: [String] = []
        var current = ""
        var inWord = false
        var quote: Character?
        for character in line {
            if let open = quote {
                if character == open { quote = nil } else { current.append(character) }
            } else if character == "\"" || character == "'" {
                quote = character
                inWord = true
            } else if character == " " || character == "\t" || character == "\n" || character == "\r" {
                if inWord { words.append(current) }
                current = ""
                inWord = false
            } else {
                current.append(character)
                inWord = true
            }
        }
        if let open = quote {
            throw ConfigurationError(
                field: key, message: "The property `\(key)` has an unbalanced \(open) quote; close it or remove it.")
        }
        if inWord { words.append(current) }
        guard let program = words.first, !program.isEmpty else {
            throw ConfigurationError(field: key, message: "The property `\(key)` names no program; give the command each item runs.")
        }
        return words
    }
}

@c(shardwork_plugin_entry)
public func shardworkPluginEntry(_ host: UnsafeRawPointer?) -> UnsafeRawPointer? {
    ShardworkPlugin.export(host: host, name: "script-job", version: "0.1.0", providers: [
        .simpleJob(name: "script", aliases: ["SCRIPT"]) { setup in try ScriptJob(setup) },
    ])
}
