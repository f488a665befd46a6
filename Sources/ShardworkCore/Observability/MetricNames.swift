/// Every metric a host reports, by name, with its meaning: the one list that the code records,
/// docs/metrics.md describes and a test holds the two to.
///
/// Labels are bounded: a job's name (`job_name`; not `job`, which Prometheus gives every series of
/// a scrape target) at most, and small fixed sets of values (a fire's source, an outcome, a
/// request's kind). Never an item, an instance or a time.
public enum MetricNames {
    // MARK: Fires and items (from the host's events)

    /// Runs of a job's items on this host, by `job_name`, `source` (schedule, trigger, misfire,
    /// failover) and `outcome` (succeeded: every item did; failed: at least one failed or timed out).
    public static let fires = "shardwork_fires_total"
    /// Item executions by `job_name` and `outcome` (succeeded, failed, timed_out).
    public static let items = "shardwork_items_total"
    /// How long an item ran, by `job_name` (histogram, seconds).
    public static let itemDuration = "shardwork_item_duration_seconds"
    /// From a scheduled fire's cron instant to its items' start, by `job_name` (histogram, seconds).
    public static let startLag = "shardwork_start_lag_seconds"
    /// Fires that came while the job's previous fire still ran here, by `job_name` and `kept`
    /// (true: it runs once after the running one; false: dropped, misfire off).
    public static let misfires = "shardwork_misfires_total"
    /// Instants that came more than a second late with misfire off and were skipped (the host was
    /// paused, every worker was busy), by `job_name`.
    public static let missedFires = "shardwork_missed_fires_total"
    /// Fires that did not run their items, by `job_name` and `reason` (registry_unavailable,
    /// sharding_did_not_settle, registry_failed, aborted, job_stopped).
    public static let firesSkipped = "shardwork_fires_skipped_total"
    /// The next cron instant a job should fire at, after the last one this host handled, by
    /// `job_name` (gauge, seconds since 1970): in the past by more than a few seconds, the job has
    /// stalled on this host.
    public static let nextFire = "shardwork_job_next_fire_timestamp_seconds"

    // MARK: Coordination

    /// Items of crashed instances queued for failover by this host, by `job_name`.
    public static let failoverQueued = "shardwork_failover_items_queued_total"
    /// Queued items of crashed instances this host claimed and ran, by `job_name`.
    public static let failoverTaken = "shardwork_failover_items_taken_total"
    /// Running items this host asked to stop because it lost its hold on them, by `job_name`.
    public static let itemsFenced = "shardwork_items_fenced_total"
    /// New assignments this host wrote as the job's leader, by `job_name`.
    public static let resharding = "shardwork_resharding_total"
    /// From a fire finding a resharding due to the assignment written, by `job_name` (histogram, seconds).
    public static let reshardingDuration = "shardwork_resharding_duration_seconds"
    /// Leadership of a job won or given up by this host, by `job_name` and `change` (elected, resigned).
    public static let leaderChanges = "shardwork_leader_changes_total"

    // MARK: Registry

    /// Requests to ZooKeeper by `kind` (create, delete, set, get, exists, children, multi) and
    /// `result` (ok, refused: answered with an error such as no node; unanswered: connection lost,
    /// timed out, session expired).
    public static let registryRequests = "shardwork_registry_requests_total"
    /// How long ZooKeeper took to answer, by `kind` (histogram, seconds).
    public static let registryRequestDuration = "shardwork_registry_request_duration_seconds"
    /// Changes of the registry session, by `event` (connection_lost, connection_restored,
    /// session_expired, session_renewed, fenced, heard_again, namespace_restored).
    public static let registryEvents = "shardwork_registry_events_total"
    /// 1 while the registry session is up, else 0.
    public static let registryConnected = "shardwork_registry_connected"
    /// Seconds since the registry last answered (ZooKeeper only).
    public static let registrySilence = "shardwork_registry_silence_seconds"
    /// 1 while the host is fenced (no item starts), else 0.
    public static let fenced = "shardwork_fenced"

    // MARK: Host

    /// 1 while the host is ready for work (`GET /readyz`), else 0.
    public static let ready = "shardwork_ready"
    /// Jobs that run on this host.
    public static let jobs = "shardwork_jobs"
    /// Jobs of the registry this host cannot run (a plugin missing, a trial failed).
    public static let jobsSetAside = "shardwork_jobs_set_aside"
    /// The worker pool's threads, those running work, and work waiting for a thread.
    public static let workerThreads = "shardwork_worker_threads"
    public static let workerThreadsBusy = "shardwork_worker_threads_busy"
    public static let workerQueueLength = "shardwork_worker_queue_length"
    /// Worker threads held by items past their timeout.
    public static let workerThreadsStuck = "shardwork_worker_threads_stuck"
    /// Plugin generations loaded by hot-loads, and plugin files refused.
    public static let pluginGenerationsLoaded = "shardwork_plugin_generations_loaded_total"
    public static let pluginFilesRefused = "shardwork_plugin_files_refused_total"
    /// Plugin generations the host holds now (the start's and the hot-loaded ones).
    public static let pluginGenerations = "shardwork_plugin_generations"
    /// Host events the metrics lost because they fell behind by more than their buffer: counts
    /// above are low by that much.
    public static let eventsLost = "shardwork_metrics_events_lost_total"
    /// Always 1, labelled with `version`, `abi` (the plugin ABI) and `toolchain`.
    public static let buildInfo = "shardwork_build_info"

    // MARK: Execution history (when `tracing:` is on)

    /// Rows waiting for the database.
    public static let historyRowsQueued = "shardwork_history_rows_queued"
    /// Rows written to the database.
    public static let historyRowsWritten = "shardwork_history_rows_written_total"
    /// Rows dropped because the queue was full (the database slow or down).
    public static let historyRowsDropped = "shardwork_history_rows_dropped_total"

    // MARK: Control API

    /// Requests to the control API by `route` (its pattern, `/v1/jobs/:job`), `method` and `status`.
    public static let apiRequests = "shardwork_api_requests_total"
    /// How long the control API took to answer, by `route` (histogram, seconds).
    public static let apiRequestDuration = "shardwork_api_request_duration_seconds"

    /// Every name above.
    public static let all: [String] = [
        fires, items, itemDuration, startLag, misfires, missedFires, firesSkipped, nextFire,
        failoverQueued, failoverTaken, itemsFenced, resharding, reshardingDuration, leaderChanges,
        registryRequests, registryRequestDuration, registryEvents, registryConnected, registrySilence, fenced,
        ready, jobs, jobsSetAside, workerThreads, workerThreadsBusy, workerQueueLength, workerThreadsStuck,
        pluginGenerationsLoaded, pluginFilesRefused, pluginGenerations, eventsLost, buildInfo,
        historyRowsQueued, historyRowsWritten, historyRowsDropped, apiRequests, apiRequestDuration,
    ]

    /// Histogram buckets (seconds) by metric: what a Prometheus exporter is configured with.
    public static let histogramBuckets: [String: [Duration]] = [
        itemDuration: [.milliseconds(10), .milliseconds(100), .seconds(1), .seconds(10), .seconds(60), .seconds(300), .seconds(1800),
                       .seconds(3600)],
        startLag: [.milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(500),
                   .seconds(1), .seconds(5), .seconds(30)],
        reshardingDuration: [.milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5),
                             .seconds(30)],
        registryRequestDuration: [.microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
                                  .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
                                  .milliseconds(500), .seconds(1), .seconds(5)],
        apiRequestDuration: [.milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                             .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5), .seconds(30)],
    ]
}
