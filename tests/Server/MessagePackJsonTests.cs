using System.Buffers;
using System.Text.Json;
using MessagePack;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Server.Protocol;
using Xunit;

namespace TaskMesh.Tests.Server;

/// <summary>
/// The socket protocol's direct reads: MessagePack values as JSON elements and back, and task maps
/// read without JSON — each agreeing with the general path (MessagePack's conversion to JSON text,
/// then the graph file's task reader), and declining what that path must judge.
/// </summary>
public sealed class MessagePackJsonTests
{
    private static readonly MessagePackSerializerOptions Untrusted = MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData);

    private static byte[] Pack(object? value) => MessagePackSerializer.Serialize(value);

    private static readonly string[] SampleValues =
    [
        """{"n":1}""",
        """{"a":[1,-2,3.5,"x",null,true,false],"b":{"c":{"d":"\u00e9\u4e2d\ud83d\ude00"}},"e":""}""",
        """[18446744073709551615,-9223372036854775808,1e300,0.1]""",
        """{"html":"<script>\"quote\"</script>","nested":[[[]],{}]}""",
        "\"text\"",
        "42",
        "null",
    ];

    public static TheoryData<string> Values => new(SampleValues);

    [Theory]
    [MemberData(nameof(Values))]
    public void AValue_BecomesTheElementTheGeneralPathMakes_AndGoesBackToTheSameMessagePack(string json)
    {
        var packed = MessagePackSerializer.ConvertFromJson(json);
        Assert.True(MessagePackJson.TryToElement(new ReadOnlySequence<byte>(packed), out var element));
        using var general = JsonDocument.Parse(MessagePackSerializer.ConvertToJson(packed, Untrusted));
        Assert.True(JsonElement.DeepEquals(general.RootElement, element), $"{element.GetRawText()} vs {general.RootElement.GetRawText()}");

        var buffer = new ArrayBufferWriter<byte>();
        var w = new MessagePackWriter(buffer);
        MessagePackJson.Write(ref w, element);
        w.Flush();
        Assert.True(MessagePackJson.TryToElement(new ReadOnlySequence<byte>(buffer.WrittenMemory), out var again));
        Assert.True(JsonElement.DeepEquals(element, again));
    }

    [Fact]
    public void WhatJsonHasNoPlainFormFor_IsDeclined()
    {
        string deep = string.Concat(Enumerable.Repeat("[", GraphLimits.MaxJsonDepth + 1)) + string.Concat(Enumerable.Repeat("]", GraphLimits.MaxJsonDepth + 1));
        int i = 0;
        foreach (var packed in new[]
        {
            Pack(new Dictionary<object, object> { [1] = "int key" }),
            Pack(new byte[] { 1, 2, 3 }),
            Pack(double.NaN),
            Pack(new Dictionary<string, object> { ["inf"] = double.PositiveInfinity }),
            MessagePackSerializer.ConvertFromJson(deep),
            new byte[] { 0xd6, 0xff, 0, 0, 0, 1 },   // a timestamp extension
        })
            Assert.False(MessagePackJson.TryToElement(new ReadOnlySequence<byte>(packed), out _), $"value {i++}");

        // Text that is not UTF-8 is read as the general path reads it: each bad byte a replacement character.
        byte[] bad = [0xa2, 0xff, 0xfe];
        Assert.True(MessagePackJson.TryToElement(new ReadOnlySequence<byte>(bad), out var replaced));
        using var general = JsonDocument.Parse(MessagePackSerializer.ConvertToJson(bad, Untrusted));
        Assert.Equal(general.RootElement.GetString(), replaced.GetString());
    }

    public static TheoryData<string> PlainTasks => new()
    {
        """{"handler":"noop"}""",
        """{"handler":"hash","id":"t1","priority":"high","args":{"bytes":64}}""",
        """{"id":"t2","handler":"noop","dependsOn":["a",{"id":"b","type":"data"},{"type":"soft","id":"c"}]}""",
    };

    [Theory]
    [MemberData(nameof(PlainTasks))]
    public void ATaskOfTheCommonShape_IsReadAsTheGraphFilesReaderReadsIt(string json)
    {
        string? last = null;
        var direct = Messages.TryReadPlainTask(new ReadOnlySequence<byte>(MessagePackSerializer.ConvertFromJson(json)), ref last);
        Assert.NotNull(direct);
        var general = TaskRequestJson.Parse(json);
        Assert.Equal((general.Handler, general.Id, general.Priority), (direct.Handler, direct.Id, direct.Priority));
        Assert.Equal(general.DependsOn?.Select(d => (d.Id, d.Kind)), direct.DependsOn?.Select(d => (d.Id, d.Kind)));
        Assert.Equal(general.Spec is null, direct.Spec is null);
        if (general.Spec is { } spec) Assert.True(JsonElement.DeepEquals(spec.Args, direct.Spec!.Args));
    }

    [Fact]
    public void ATaskOfAnyOtherShape_IsLeftToTheGraphFilesReader_AndOneHandlerNameIsOneString()
    {
        foreach (var json in new[]
        {
            """{"id":"x"}""",                                         // no handler
            """{"handler":"noop","retries":2}""",                    // another option
            """{"handler":"noop","handler":"hash"}""",               // a field twice
            """{"handler":5}""",
            """{"handler":"noop","priority":"urgent"}""",
            """{"handler":"noop","dependsOn":[{"id":"a","type":"sideways"}]}""",
            """{"handler":"noop","dependsOn":[{"id":"a","weight":2}]}""",
            """{"handler":"noop","args":[1]}""",
        })
        {
            string? none = null;
            Assert.Null(Messages.TryReadPlainTask(new ReadOnlySequence<byte>(MessagePackSerializer.ConvertFromJson(json)), ref none));
        }
        string? last = null;
        var a = Messages.TryReadPlainTask(new ReadOnlySequence<byte>(Pack(new Dictionary<string, object> { ["handler"] = "py.score" })), ref last)!;
        var b = Messages.TryReadPlainTask(new ReadOnlySequence<byte>(Pack(new Dictionary<string, object> { ["handler"] = "py.score" })), ref last)!;
        Assert.Same(a.Handler, b.Handler);
        var c = Messages.TryReadPlainTask(new ReadOnlySequence<byte>(Pack(new Dictionary<string, object> { ["handler"] = "py.other" })), ref last)!;
        Assert.Equal("py.other", c.Handler);
    }

    [Fact]
    public void ValuesConvertedTogether_AreTheElementsEachMakesAlone_AndOneDeclinedValueDeclinesTheBatch()
    {
        var values = SampleValues;
        var raws = values.Select(v => new ReadOnlyMemory<byte>(MessagePackSerializer.ConvertFromJson(v))).ToArray();
        var together = new JsonElement[raws.Length];
        Assert.True(MessagePackJson.TryToElements(raws, together));
        for (int i = 0; i < raws.Length; i++)
        {
            Assert.True(MessagePackJson.TryToElement(new ReadOnlySequence<byte>(raws[i]), out var alone));
            Assert.True(JsonElement.DeepEquals(alone, together[i]), values[i]);
        }
        // Many: past one document's size, the values are split over several, each element still its value's.
        var many = Enumerable.Range(0, 3000).Select(i => raws[i % raws.Length]).ToArray();
        var manyElements = new JsonElement[many.Length];
        Assert.True(MessagePackJson.TryToElements(many, manyElements));
        for (int i = 0; i < many.Length; i++) Assert.True(JsonElement.DeepEquals(together[i % raws.Length], manyElements[i]), $"value {i}");

        var withBinary = raws.Append(new ReadOnlyMemory<byte>(Pack(new Dictionary<string, object> { ["b"] = new byte[] { 1, 2 } }))).ToArray();
        Assert.False(MessagePackJson.TryToElements(withBinary, new JsonElement[withBinary.Length]));
    }

    /// <summary>A message [type, id, [body]] as a frame's payload.</summary>
    private static byte[] Message(int type, object body) => MessagePackSerializer.Serialize(new object[] { type, 1, new[] { body } });

    [Fact]
    public void ABatchOfTasks_ReadsEachTasksArguments_AndATaskWhoseArgumentsAreDeclinedTakesTheGeneralPath()
    {
        var tasks = new object[]
        {
            new Dictionary<string, object> { ["handler"] = "h", ["args"] = new Dictionary<string, object> { ["n"] = 1 } },
            new Dictionary<string, object> { ["handler"] = "h" },
            new Dictionary<string, object> { ["handler"] = "h", ["args"] = new Dictionary<string, object> { ["n"] = 3, ["s"] = "three" } },
            new Dictionary<string, object> { ["handler"] = "h", ["args"] = new Dictionary<string, object> { ["big"] = new string('x', 3000) } },
        };
        var read = Messages.Read(Message(MessageType.SubmitTasks, tasks)).Tasks!;
        Assert.Equal(4, read.Count);
        Assert.Equal(1, read[0].Request!.Spec!.Args.GetProperty("n").GetInt32());
        Assert.Null(read[1].Request!.Spec);
        Assert.Equal("three", read[2].Request!.Spec!.Args.GetProperty("s").GetString());
        Assert.Equal(3000, read[3].Request!.Spec!.Args.GetProperty("big").GetString()!.Length);   // over the batch's size: alone

        // Binary arguments have no plain JSON form: that task goes the general path (which names the
        // problem or converts it as MessagePack does); the others in the batch still read directly.
        tasks[1] = new Dictionary<string, object> { ["handler"] = "h", ["args"] = new Dictionary<string, object> { ["b"] = new byte[] { 1, 2 } } };
        read = Messages.Read(Message(MessageType.SubmitTasks, tasks)).Tasks!;
        Assert.Null(read[1].Request);
        Assert.NotNull(read[1].Json);
        Assert.Equal(1, read[0].Request!.Spec!.Args.GetProperty("n").GetInt32());
        Assert.Equal("three", read[2].Request!.Spec!.Args.GetProperty("s").GetString());
    }

    [Fact]
    public void ABatchOfResults_ReadsEachOutput_AsAResultAloneWouldBeRead()
    {
        var results = new object[]
        {
            new object?[] { 1L, true, new Dictionary<string, object> { ["n"] = 1 }, null },
            new object?[] { 2L, true, new object[] { 1, "two", 3.5 }, 0.5 },
            new object?[] { 3L, true, "text", null },
            new object?[] { 4L, false, "it broke", null },
            new object?[] { 5L, true, new Dictionary<string, object> { ["b"] = new byte[] { 1, 2 } }, null },
            new object?[] { 6L, true, new Dictionary<string, object> { ["big"] = new string('y', 2000) }, null },
        };
        var together = Messages.Read(Message(MessageType.Results, results)).Results!;
        Assert.Equal(results.Length, together.Count);
        for (int i = 0; i < results.Length; i++)
        {
            var alone = Assert.Single(Messages.Read(Message(MessageType.Results, new[] { results[i] })).Results!);
            var got = together[i];
            Assert.Equal((alone.Lease, alone.Ok, alone.Error, alone.Confidence), (got.Lease, got.Ok, got.Error, got.Confidence));
            if (alone.Output is JsonElement a) Assert.True(JsonElement.DeepEquals(a, (JsonElement)got.Output!), $"result {i}");
            else Assert.Equal(alone.Output, got.Output);
        }
        Assert.Equal(1, ((JsonElement)together[0].Output!).GetProperty("n").GetInt32());
        Assert.Equal("it broke", together[3].Error);
    }

    [Theory]
    [InlineData(MessageType.SubmitTasks)]
    [InlineData(MessageType.Results)]
    [InlineData(MessageType.WaitTasks)]
    public void AFrameClaimingTheLargestBatch_AllocatesLessThanItsOwnSize_BeforeItsFirstBadItemRefusesIt(int type)
    {
        // [type, id, [array of 100,000 …]] and 100,000 nils: each claimed item has a byte (so the
        // reader's own check of the count passes), and the first is of the wrong shape.
        var buffer = new ArrayBufferWriter<byte>();
        var w = new MessagePackWriter(buffer);
        w.WriteArrayHeader(3);
        w.Write(type);
        w.Write(1u);
        w.WriteArrayHeader(1);
        w.WriteArrayHeader(Messages.MaxBatch);
        for (int i = 0; i < Messages.MaxBatch; i++) w.WriteNil();
        w.Flush();
        var frame = buffer.WrittenMemory;
        Assert.Throws<ProtocolException>(() => Messages.Read(frame));   // a first call: what the runtime makes once
        long before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Throws<ProtocolException>(() => Messages.Read(frame));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < frame.Length, $"{allocated:N0} bytes allocated for a {frame.Length:N0}-byte frame");
    }
}
