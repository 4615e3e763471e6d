FROM reg.example/a:1
RUN <<CMD
FROM reg.example/evil:1
CMD
