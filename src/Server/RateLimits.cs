using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.DependencyInjection;

namespace TaskMesh.Server;

/// <summary>
/// Request rate limits on the HTTP API (ASP.NET Core rate limiting): a token bucket per caller —
/// the token's subject when tokens are required, else the remote address — refilled at the
/// configured rate with bursts of twice it; a request past it is refused at once with 429 and
/// <c>Retry-After</c> (nothing is queued). <c>/health</c> is not limited.
/// </summary>
internal static class RateLimits
{
    public static void Add(IServiceCollection services, int perSecond)
    {
        services.AddRateLimiter(o =>
        {
            o.GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, string>(http =>
            {
                if (http.Request.Path.StartsWithSegments("/health")) return RateLimitPartition.GetNoLimiter("health");
                string caller = http.User.Identity?.IsAuthenticated == true
                    ? "token:" + (http.User.Identity.Name ?? "")
                    : "address:" + (http.Connection.RemoteIpAddress?.ToString() ?? "?");
                return RateLimitPartition.GetTokenBucketLimiter(caller, _ => new TokenBucketRateLimiterOptions
                {
                    TokenLimit = perSecond * 2,
                    TokensPerPeriod = perSecond,
                    ReplenishmentPeriod = TimeSpan.FromSeconds(1),
                    QueueLimit = 0,
                    AutoReplenishment = true,
                });
            });
            o.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
            o.OnRejected = async (ctx, ct) =>
            {
                ctx.HttpContext.Response.Headers.RetryAfter = "1";
                await HttpApi.Problem(StatusCodes.Status429TooManyRequests, "too many requests",
                    $"this caller made more than {perSecond} requests a second (bursts of {perSecond * 2}): retry later").ExecuteAsync(ctx.HttpContext);
            };
        });
    }
}
