using PageCore.Systematic;

namespace PageCore.Stress.Scenarios;

/// <summary>
/// A scenario with a small configuration for the controlled scheduler (<c>run &lt;scenario&gt; --systematic</c>): two to
/// four logical threads doing a few operations each on a fresh small arena, in the fixed or the legacy form, with the
/// scenario's invariants checked as in a real-thread run (a bug report thrown by the library, and a final check).
/// </summary>
internal interface ISystematicScenario
{
    /// <summary>Schedule points one run of the program passes, about (PCT draws its change points from these).</summary>
    int ProgramSteps { get; }

    /// <summary>One schedule's program, in the legacy form when <paramref name="legacy"/>; its cleanup releases its arena.</summary>
    SystematicProgram Program(bool legacy);
}
