using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace PageCore.AspNetCore;

/// <summary>Registers PageCore as Kestrel's buffer pool.</summary>
public static class PageCoreWebHostBuilderExtensions
{
    /// <summary>
    /// Makes Kestrel (socket transport and HTTP layers) rent its buffers from a PageCore arena:
    /// <c>builder.WebHost.UsePageCoreMemoryPool();</c> after <c>WebApplication.CreateBuilder</c>.
    /// </summary>
    /// <param name="builder">The web host builder.</param>
    /// <param name="configure">Adjusts the arena's and the pools' options, or null for the defaults.</param>
    /// <returns><paramref name="builder"/>.</returns>
    public static IWebHostBuilder UsePageCoreMemoryPool(this IWebHostBuilder builder, Action<PageCoreMemoryPoolOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.ConfigureServices(services => services.AddPageCoreMemoryPool(configure));
    }

    /// <summary>
    /// Registers <see cref="PageCoreMemoryPoolFactory"/> as a singleton and as <see cref="IMemoryPoolFactory{T}"/> of
    /// bytes, replacing any earlier registration. The arena is created when Kestrel first asks for a pool.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Adjusts the arena's and the pools' options, or null for the defaults.</param>
    /// <returns><paramref name="services"/>.</returns>
    public static IServiceCollection AddPageCoreMemoryPool(this IServiceCollection services, Action<PageCoreMemoryPoolOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = new PageCoreMemoryPoolOptions();
        configure?.Invoke(options);
        services.AddSingleton(_ => new PageCoreMemoryPoolFactory(options));
        services.AddSingleton<IMemoryPoolFactory<byte>>(sp => sp.GetRequiredService<PageCoreMemoryPoolFactory>());
        return services;
    }
}
