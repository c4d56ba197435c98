using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace TaskMesh.Server;

/// <summary>
/// Bearer tokens on the HTTP API: JwtBearer with <see cref="Tokens.ValidationParameters"/> (the
/// socket handshake validates with the same), one authorization policy per role (a role allows
/// what the roles below it allow), and problem details for 401 and 403.
/// </summary>
internal static class Authentication
{
    public static void Add(IServiceCollection services, byte[] key)
    {
        services.AddAuthentication(JwtBearerDefaults.AuthenticationScheme).AddJwtBearer(o =>
        {
            o.MapInboundClaims = false;
            o.TokenValidationParameters = Tokens.ValidationParameters(key);
            o.Events = new JwtBearerEvents
            {
                // A browser signed in to the dashboard sends its token in the session cookie instead
                // of a header (changes it makes must then carry the anti-forgery token: Dashboard).
                OnMessageReceived = ctx =>
                {
                    if (string.IsNullOrEmpty(ctx.Request.Headers.Authorization) && ctx.Request.Cookies.TryGetValue(Dashboard.Dashboard.SessionCookie, out var token) && token.Length > 0)
                    {
                        ctx.Token = token;
                        ctx.HttpContext.Items[Dashboard.Dashboard.ByCookie] = true;
                    }
                    return Task.CompletedTask;
                },
                OnChallenge = async ctx =>
                {
                    ctx.HandleResponse();
                    ctx.Response.Headers.WWWAuthenticate = "Bearer";
                    string detail = ctx.AuthenticateFailure is Microsoft.IdentityModel.Tokens.SecurityTokenExpiredException ? "the token has expired"
                        : ctx.AuthenticateFailure is not null ? "the token is not valid"
                        : "this request needs a bearer token (Authorization: Bearer TOKEN; make one with taskmesh token create)";
                    await HttpApi.Problem(StatusCodes.Status401Unauthorized, "unauthenticated", detail).ExecuteAsync(ctx.HttpContext);
                },
                OnForbidden = async ctx =>
                {
                    string role = ctx.HttpContext.User.FindFirst(Tokens.RoleClaim)?.Value ?? "none";
                    var needed = ctx.HttpContext.GetEndpoint()?.Metadata.GetMetadata<AuthorizeAttribute>()?.Policy ?? "another role";
                    await HttpApi.Problem(StatusCodes.Status403Forbidden, "forbidden", $"the token's role ({role}) does not allow this: it needs {needed}").ExecuteAsync(ctx.HttpContext);
                },
            };
        });
        services.AddAuthorization(o =>
        {
            foreach (var role in Roles.All)
                o.AddPolicy(role, p => p.RequireAuthenticatedUser().RequireAssertion(ctx => Roles.Allows(ctx.User.FindFirst(Tokens.RoleClaim)?.Value, role)));
        });
    }
}

/// <summary>Which role each endpoint needs, applied only when the service requires tokens.</summary>
internal sealed class Access(bool required)
{
    public bool Required => required;

    public TBuilder Require<TBuilder>(TBuilder endpoint, string role) where TBuilder : IEndpointConventionBuilder
        => required ? endpoint.RequireAuthorization(new AuthorizeAttribute(role)) : endpoint;
}
