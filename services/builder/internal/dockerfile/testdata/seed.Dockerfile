FROM busybox:latest
LABEL maintainer="NGINX Docker Maintainers <docker-maint@nginx.com>"
ENV NGINX_VERSION=1.17.4
ENV NJS_VERSION=0.3.5
ENV PKG_RELEASE=1~buster
RUN set -x && echo "nginx:x:101:101:nginx:/nonexistent:/bin/false" >> /etc/passwd && echo "nginx:x:101:" >> /etc/group && mkdir -p /var/log/nginx && echo ok > /var/log/nginx/install.log
RUN ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGTERM
CMD ["nginx", "-g", "daemon off;"]
