@testable import ShardworkCore
import Testing

/// The fire state machine alone: no host, clock, registry or plugin.
@Suite("Fire state machine")
struct JobFireStateTests {
    /// An armed fire as the state machine sees it.
    final class Fire: ArmedFireToken {
        let deadline: Int64
        let next: Int64?
        let preparation: ObjectIdentifier
        let items: [Int]
        var isReleased = false

        init(_ deadline: Int64, next: Int64? = nil, preparation: ObjectIdentifier, items: [Int] = [0, 1]) {
            self.deadline = deadline
            self.next = next ?? deadline + 1000
            self.preparation = preparation
            self.items = items
        }
    }

    /// Stands for a job preparation: only its identity matters.
    final class Preparation {}

    let preparation = Preparation()
    var id: ObjectIdentifier { ObjectIdentifier(preparation) }

    func state(misfire: Bool = true) -> JobFireState<Fire> {
        JobFireState(preparation: id, misfireEnabled: misfire)
    }

    @Test("an idle job's fire starts on time as scheduled; the run ends idle")
    func idleFire() {
        var state = state()
        let (decision, dropped) = state.timerFired(deadline: 1000, now: 1000)
        #expect(decision == .start(.schedule) && dropped == nil)
        #expect(state.running)
        #expect(state.runEnded() == nil)
        #expect(!state.running)
    }

    @Test("a fire that finds the job running: kept once and run after it with misfire on (markers written once), dropped with it off",
          arguments: [true, false])
    func misfireWhileRunning(misfire: Bool) {
        var state = state(misfire: misfire)
        _ = state.timerFired(deadline: 1000, now: 1000)
        state.itemsKnown([0, 2])
        let second = state.timerFired(deadline: 2000, now: 2000).0
        let third = state.timerFired(deadline: 3000, now: 3000).0
        if misfire {
            #expect(second == .misfire(kept: true, marks: .items([0, 2])))
            #expect(third == .misfire(kept: true, marks: nil), "one extra run is kept, and marked once")
            #expect(state.runEnded() == .misfire(2000), "run as the first instant that misfired")
            #expect(state.runEnded() == nil, "never more than one")
        } else {
            #expect(second == .misfire(kept: false, marks: nil) && third == .misfire(kept: false, marks: nil))
            #expect(state.runEnded() == nil)
        }
        #expect(!state.running)
    }

    @Test("before the running fire knows its items, a misfire marks the items assigned now")
    func misfireBeforeItemsKnown() {
        var state = state()
        _ = state.timerFired(deadline: 1000, now: 1000)
        #expect(state.timerFired(deadline: 2000, now: 2000).0 == .misfire(kept: true, marks: .assignedNow))
    }

    @Test("ElasticJob's misfire loop: a run takes the kept misfire and runs again at once; then nothing is left for after the run")
    func misfireLoop() {
        var state = state()
        _ = state.timerFired(deadline: 1000, now: 1000)
        _ = state.timerFired(deadline: 2000, now: 2000)
        let first = state.takeMisfire()
        let second = state.takeMisfire()
        #expect(first && !second)
        #expect(state.runEnded() == nil)
    }

    @Test("a fire more than a second late runs as a misfire with misfire on, and is missed with it off", arguments: [true, false])
    func lateFire(misfire: Bool) {
        var state = state(misfire: misfire)
        let decision = state.timerFired(deadline: 1000, now: 2500).0
        #expect(decision == (misfire ? .start(.misfire) : .missed(lateMilliseconds: 1500)))
        #expect(state.running == misfire)
        // A second late is not late yet.
        var onTime = self.state(misfire: misfire)
        #expect(onTime.timerFired(deadline: 1000, now: 2000).0 == .start(.schedule))
    }

    @Test("a trigger during a run runs once after it, however many come; failover work goes first")
    func triggerDuringRun() {
        var state = state()
        #expect(state.trigger() == .start)
        #expect(state.trigger() == .queued)
        #expect(state.trigger() == .queued)
        #expect(state.failoverClaimed([3: 7]) == .queued)
        _ = state.timerFired(deadline: 2000, now: 2000)
        #expect(state.runEnded() == .failover)
        #expect(state.takeFailoverClaims() == [3: 7])
        #expect(state.runEnded() == .misfire(2000))
        #expect(state.runEnded() == .trigger)
        #expect(state.runEnded() == nil)
    }

    @Test("failover claims run at once when idle; while running they wait, and a later claim of an item replaces its epoch")
    func failoverWhileRunning() {
        var idle = state()
        #expect(idle.failoverClaimed([1: 5]) == .start)
        #expect(idle.takeFailoverClaims() == [1: 5])
        #expect(idle.runEnded() == nil)

        var busy = state()
        _ = busy.timerFired(deadline: 1000, now: 1000)
        #expect(busy.failoverClaimed([1: 5, 2: 5]) == .queued)
        #expect(busy.failoverClaimed([1: 9]) == .queued)
        #expect(busy.runEnded() == .failover)
        #expect(busy.takeFailoverClaims() == [1: 9, 2: 5])
        #expect(busy.runEnded() == nil)
    }

    @Test("an armed fire that its wave takes starts there; the timer at that instant only learns the next fire time")
    func armedFireReleased() {
        var state = state()
        let fire = Fire(1000, next: 2000, preparation: id)
        guard case .armed(nil) = state.arm(fire, generation: state.armGeneration) else { Issue.record("not armed"); return }
        fire.isReleased = true
        #expect(state.release(fire, now: 1000, fresh: true) == .start)
        #expect(state.running && state.currentFire === fire)
        #expect(state.timerFired(deadline: 1000, now: 1001).0 == .takenByWave(next: .known(2000)))
        // A misfire while it runs marks the armed fire's items.
        #expect(state.timerFired(deadline: 2000, now: 2000).0 == .misfire(kept: true, marks: .items([0, 1])))
    }

    @Test("a released fire whose registry state changed, or that comes late, takes the general path (late: as a misfire, or missed)",
          arguments: [true, false])
    func staleRelease(misfire: Bool) {
        var state = state(misfire: misfire)
        let changed = Fire(1000, preparation: id)
        _ = state.arm(changed, generation: state.armGeneration)
        #expect(state.release(changed, now: 1000, fresh: false) == .stale(late: false))
        #expect(state.runEnded() == nil)
        let late = Fire(5000, preparation: id)
        _ = state.arm(late, generation: state.armGeneration)
        #expect(state.release(late, now: 6200, fresh: true) == (misfire ? .stale(late: true) : .missed(lateMilliseconds: 1200)))
    }

    @Test("a fire armed and then not taken by its wave is dropped by the timer, which starts it the general way")
    func armedFireNotReleased() {
        var state = state()
        let fire = Fire(1000, preparation: id)
        _ = state.arm(fire, generation: state.armGeneration)
        let (decision, dropped) = state.timerFired(deadline: 1000, now: 1000)
        #expect(decision == .start(.schedule) && dropped === fire)
        #expect(state.armed == nil)
    }

    @Test("a wave that has an earlier fire not yet started (workers busy) keeps it armed; the next instant is a misfire")
    func pendingReleasedFire() {
        var state = state()
        let earlier = Fire(1000, preparation: id)
        _ = state.arm(earlier, generation: state.armGeneration)
        earlier.isReleased = true
        #expect(state.hasPendingReleasedFire)
        let later = Fire(2000, preparation: id)
        guard case .kept = state.arm(later, generation: state.armGeneration) else { Issue.record("armed over a released fire"); return }
        #expect(state.dropArmed() == nil, "the wave starts it")
        // The timer's instant :02 comes before the wave could start :01 (a second late: not late yet).
        #expect(state.timerFired(deadline: 2000, now: 2000).0 == .misfire(kept: true, marks: .assignedNow))
        #expect(state.release(earlier, now: 2000, fresh: true) == .start)
        #expect(state.runEnded() == .misfire(2000))
    }

    @Test("a preparation replaced during an arming: the arming publishes nothing, an armed fire is dropped, and a released one learns its next fire from the schedule")
    func replacementDuringArming() {
        var state = state()
        let armedBefore = Fire(1000, preparation: id)
        _ = state.arm(armedBefore, generation: state.armGeneration)
        let generation = state.armGeneration
        let replacement = Preparation()
        #expect(state.replacePreparation(ObjectIdentifier(replacement), misfireEnabled: false) === armedBefore)
        guard case .kept = state.arm(Fire(2000, preparation: id), generation: generation) else { Issue.record("armed after replacement"); return }
        #expect(state.armed == nil)

        // A fire of the old preparation that its wave had already: it runs afresh, and the next
        // fire time comes from the new schedule.
        var released = self.state()
        let old = Fire(3000, next: 4000, preparation: id)
        _ = released.arm(old, generation: released.armGeneration)
        old.isReleased = true
        #expect(released.replacePreparation(ObjectIdentifier(replacement), misfireEnabled: true) == nil, "its wave has it")
        #expect(released.release(old, now: 3000, fresh: true) == .stale(late: false))
        #expect(released.timerFired(deadline: 3000, now: 3000).0 == .takenByWave(next: .fromSchedule))
    }

    @Test("stop: nothing starts after it, an armed fire is handed back to take off its wave, a run under way ends idle")
    func stop() {
        var state = state()
        _ = state.timerFired(deadline: 1000, now: 1000)
        _ = state.timerFired(deadline: 2000, now: 2000)
        #expect(state.trigger() == .queued)
        let fire = Fire(3000, preparation: id)
        _ = state.arm(fire, generation: state.armGeneration)
        #expect(state.stop() === fire)
        #expect(state.timerFired(deadline: 3000, now: 3000).0 == .none, "a stopped job takes no fire, even while a run ends")
        let rerun = state.takeMisfire()
        #expect(!rerun, "no misfire re-run once stopped")
        #expect(state.runEnded() == nil, "the kept misfire and trigger do not run")
        #expect(state.timerFired(deadline: 4000, now: 4000).0 == .none)
        #expect(state.trigger() == .none && state.failoverClaimed([0: 1]) == .none)
        guard case .kept = state.arm(Fire(5000, preparation: id), generation: state.armGeneration) else { Issue.record("armed when stopped"); return }
        #expect(state.release(fire, now: 3000, fresh: true) == .none)
    }
}

@Suite("How a run's items end")
struct ItemsEndingTests {
    let outcomes: [Int: ItemOutcome] = [0: .succeeded, 1: .failed(message: "stopped", code: 0), 2: .timedOut(seconds: 1)]

    @Test("in the session they started in and still owned, every item is done, failed ones included")
    func owned() {
        #expect(ItemsEnding(items: [0, 1, 2], outcomes: outcomes, sameSession: true, owned: true) == .kept(done: [0, 1, 2], fenced: []))
    }

    @Test("after the host fenced, the items that did not succeed were stopped by fencing; the others are done")
    func fenced() {
        let ending = ItemsEnding(items: [0, 1, 2, 3], outcomes: outcomes, sameSession: true, owned: false)
        #expect(ending == .kept(done: [0], fenced: [1, 2, 3]), "an item with no outcome did not finish either")
        #expect(ending.fenced == [1, 2, 3])
    }

    @Test("a new session since the items started: nothing of them is this host's any more")
    func pastSession() {
        let ending = ItemsEnding(items: [0, 1], outcomes: outcomes, sameSession: false, owned: false)
        #expect(ending == .ranPastSession([0, 1]) && ending.fenced.isEmpty)
    }
}
