using TaskMesh.QuantumSim;
using Xunit;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace TaskMesh.Tests.QuantumSim;

/// <summary>
/// A fact of a fixture run once per kernel width (<see cref="StateVectorTests"/>): on a machine
/// whose hardware lacks the fixture's width, it is reported skipped with the reason, never passed
/// without running.
/// </summary>
[XunitTestCaseDiscoverer("TaskMesh.Tests.QuantumSim.WidthFactDiscoverer", "TaskMesh.Tests")]
[AttributeUsage(AttributeTargets.Method)]
public sealed class WidthFactAttribute : FactAttribute;

/// <summary>The theory form of <see cref="WidthFactAttribute"/>.</summary>
[XunitTestCaseDiscoverer("TaskMesh.Tests.QuantumSim.WidthTheoryDiscoverer", "TaskMesh.Tests")]
[AttributeUsage(AttributeTargets.Method)]
public sealed class WidthTheoryAttribute : TheoryAttribute;

/// <summary>Why the fixture class of <paramref name="method"/> cannot run here, or null.</summary>
internal static class WidthSupport
{
    public static string? WhyNot(ITestMethod method)
    {
        var type = method.TestClass.Class.ToRuntimeType();
        if (type is null || type.IsAbstract || !typeof(StateVectorTests).IsAssignableFrom(type)) return null;
        var width = ((StateVectorTests)Activator.CreateInstance(type)!).KernelWidth;
        return StateVector.IsSupported(width) ? null : $"this machine's hardware has no {width} kernels (SIMD width not accelerated)";
    }
}

public sealed class WidthFactDiscoverer(IMessageSink sink) : FactDiscoverer(sink)
{
    public override IEnumerable<IXunitTestCase> Discover(ITestFrameworkDiscoveryOptions options, ITestMethod method, IAttributeInfo attribute)
        => WidthSupport.WhyNot(method) is { } why
            ? [new SkippedWidthTestCase(DiagnosticMessageSink, options.MethodDisplayOrDefault(), options.MethodDisplayOptionsOrDefault(), method, why)]
            : base.Discover(options, method, attribute);
}

public sealed class WidthTheoryDiscoverer(IMessageSink sink) : TheoryDiscoverer(sink)
{
    public override IEnumerable<IXunitTestCase> Discover(ITestFrameworkDiscoveryOptions options, ITestMethod method, IAttributeInfo attribute)
        => WidthSupport.WhyNot(method) is { } why
            ? [new SkippedWidthTestCase(DiagnosticMessageSink, options.MethodDisplayOrDefault(), options.MethodDisplayOptionsOrDefault(), method, why)]
            : base.Discover(options, method, attribute);
}

/// <summary>A test case reported as skipped, with a reason known only at discovery.</summary>
public sealed class SkippedWidthTestCase : XunitTestCase
{
    private string _reason = "";

    [Obsolete("Called by the de-serializer; should only be called by deriving classes for de-serialization purposes")]
    public SkippedWidthTestCase() { }

    public SkippedWidthTestCase(IMessageSink sink, TestMethodDisplay display, TestMethodDisplayOptions options, ITestMethod method, string reason)
        : base(sink, display, options, method) => _reason = reason;

    protected override string GetSkipReason(IAttributeInfo factAttribute) => _reason;

    public override void Serialize(IXunitSerializationInfo data)
    {
        base.Serialize(data);
        data.AddValue("Reason", _reason);
    }

    public override void Deserialize(IXunitSerializationInfo data)
    {
        _reason = data.GetValue<string>("Reason");
        base.Deserialize(data);
    }
}
