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

    public static TheoryData<string> Values => new()
    {
        """{"n":1}""",
        """{"a":[1,-2,3.5,"x",null,true,false],"b":{"c":{"d":"\u00e9\u4e2d\ud83d\ude00"}},"e":""}""",
        """[18446744073709551615,-9223372036854775808,1e300,0.1]""",
        """{"html":"<script>\"quote\"</script>","nested":[[[]],{}]}""",
        "\"text\"",
        "42",
        "null",
    };

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
}
